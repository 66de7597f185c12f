# Packages the SDK for those who install it as a gem rather than putting
# sdk/ruby/lib on the load path.
require_relative "lib/distribot/version"

Gem::Specification.new do |spec|
  spec.name = "distribot"
  spec.version = Distribot::VERSION
  spec.summary = "Host distribot handlers written in Ruby in a long-lived program"
  spec.description = "The program side of distribot's handler protocol: handler classes in the " \
                     "style of the original distribot gem, served to a distribot worker over stdin and stdout."
  spec.authors = ["distribot contributors"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.0"
  spec.files = Dir["lib/**/*.rb"] + ["README.md"]
  spec.require_paths = ["lib"]
end
