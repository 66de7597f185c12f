# Which handler classes this program hosts. Classes register themselves when
# they include Distribot::Worker; the checks that need the whole class body
# (its final name, its methods) wait for resolve, which runs before the hello
# so a mistake stops the program with a clear message instead of failing jobs.
module Distribot
  class Registry
    def initialize
      @classes = []
    end

    def register(handler_class)
      @classes << handler_class unless @classes.include?(handler_class)
    end

    def classes
      @classes.dup
    end

    # Instantiates each class once: its instance is shared by all the
    # requests of the program, as the original gem's long-lived worker was.
    def resolve
      if @classes.empty?
        raise RegistrationError, "no handler classes: include Distribot::Worker in a class before Distribot.run"
      end

      handlers = {}
      @classes.each do |handler_class|
        name = handler_class.handler_name
        if name.nil?
          raise RegistrationError, "#{handler_class.inspect} has no name: an anonymous class needs handler_name \"Name\""
        end
        if (other = handlers[name])
          raise RegistrationError,
                "handler name #{name.inspect} is registered twice: by #{other.handler_class} and by #{handler_class}; " \
                "give one of them another name with handler_name"
        end

        handlers[name] = Handler.new(handler_class)
      end
      handlers
    end
  end
end
