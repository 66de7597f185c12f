# The class-level vocabulary of the original gem (`include Distribot::Worker`,
# `enumerate_with`, `process_tasks_with`), so handler classes port with their
# bodies unchanged. Declarations are only recorded here; they are checked
# together when the program starts (Registry#resolve), because a class body
# may rename its handler after the include that registered it.
module Distribot
  module Worker
    DEFAULT_VERSION = "0.0.0"
    VERSION_FORMAT = /\A(\d+)\.(\d+)(?:\.(\d+))?\z/

    def self.included(handler_class)
      handler_class.extend(ClassMethods)
      Distribot.registry.register(handler_class)
    end

    # Reads "1.2" as "1.2.0", as the worker does, so the hello carries the
    # version the worker will route by.
    def self.normalize_version(version, handler_class)
      match = VERSION_FORMAT.match(version.to_s)
      unless match
        raise RegistrationError,
              "#{handler_class}: version #{version.inspect} is not MAJOR.MINOR.PATCH (like \"2.1.0\") or MAJOR.MINOR"
      end
      "#{match[1].to_i}.#{match[2].to_i}.#{(match[3] || 0).to_i}"
    end

    module ClassMethods
      def version(version = nil)
        return @distribot_version || DEFAULT_VERSION if version.nil?

        @distribot_version = Worker.normalize_version(version, self)
      end

      # Namespaces are for Ruby code organisation; workflows name handlers
      # with one word, so the last constant name is the default.
      def handler_name(name = nil)
        return @distribot_handler_name || self.name&.split("::")&.last if name.nil?

        name = name.to_s
        raise RegistrationError, "#{self}: handler_name must not be empty" if name.strip.empty?

        @distribot_handler_name = name
      end

      def enumerate_with(method_name)
        @distribot_enumerate_method = method_name.to_sym
      end

      def process_tasks_with(method_name)
        @distribot_process_method = method_name.to_sym
      end

      # nil when the class declared nothing and has no method of the default
      # name: the handler then has one job, nil, per phase visit.
      def distribot_enumerate_method
        @distribot_enumerate_method || (:enumerate if distribot_defines?(:enumerate))
      end

      # nil when there is nothing to call: jobs then succeed with no output.
      def distribot_process_method
        @distribot_process_method || (:process if distribot_defines?(:process))
      end

      private

      def distribot_defines?(method_name)
        method_defined?(method_name) || private_method_defined?(method_name)
      end
    end
  end
end
