# The SDK's own version: the gemspec reads it, and every hello names it so a
# worker's logs say which SDK a program runs.
module Distribot
  VERSION = "0.1.0"
end
