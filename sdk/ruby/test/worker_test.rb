# The class-level declarations and the checks made before a program starts,
# tested in this process: they need no worker to talk to.
require_relative "test_helper"

class WorkerTest < Minitest::Test
  def registry_of(*classes)
    registry = Distribot::Registry.new
    classes.each { |handler_class| registry.register(handler_class) }
    registry
  end

  def handler_class(name = nil, &body)
    Class.new do
      include Distribot::Worker
      handler_name name if name
      class_eval(&body) if body
    end
  end

  def test_including_the_module_registers_the_class
    assert_includes Distribot.registry.classes, Squarer
  end

  def test_version_defaults_and_is_validated
    assert_equal "0.0.0", handler_class("A").version
    assert_equal "1.2.0", handler_class("B") { version "1.2" }.version
    assert_equal "3.0.1", handler_class("C") { version "3.0.1" }.version
    ["1", "1.2.3.4", "v1.2.3", "1.2.x", "", "1.2.3-beta"].each do |bad|
      error = assert_raises(Distribot::RegistrationError) { handler_class("D") { version bad } }
      assert_match(/version #{Regexp.escape(bad.inspect)} is not MAJOR\.MINOR\.PATCH/, error.message)
    end
  end

  def test_a_name_registered_twice_is_refused
    registry = registry_of(handler_class("Same"), handler_class("Same"))
    error = assert_raises(Distribot::RegistrationError) { registry.resolve }
    assert_match(/handler name "Same" is registered twice/, error.message)
  end

  def test_an_anonymous_class_needs_a_name
    error = assert_raises(Distribot::RegistrationError) { registry_of(handler_class).resolve }
    assert_match(/needs handler_name/, error.message)
  end

  def test_a_declared_method_must_exist_and_take_the_right_arguments
    missing = handler_class("Missing") { process_tasks_with :nowhere }
    assert_raises(Distribot::RegistrationError) { registry_of(missing).resolve }

    wrong = handler_class("Wrong") { define_method(:process) { |context| context } }
    error = assert_raises(Distribot::RegistrationError) { registry_of(wrong).resolve }
    assert_match(/Wrong#process must take \(context, job\)/, error.message)

    flexible = handler_class("Flexible") do
      define_method(:enumerate) { |*arguments| arguments }
      define_method(:process) { |context, job, extra = nil| [context, job, extra] }
    end
    assert_equal ["Flexible"], registry_of(flexible).resolve.keys
  end

  def test_no_handlers_is_an_error
    assert_raises(Distribot::RegistrationError) { Distribot::Registry.new.resolve }
  end
end

# Registered in this process only to show that including registers.
class Squarer
  include Distribot::Worker
end
