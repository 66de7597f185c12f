# Two classes whose default handler names collide: the program must refuse
# to start rather than pick one.
require "distribot"

module Billing
  class Invoicer
    include Distribot::Worker
  end
end

module Shipping
  class Invoicer
    include Distribot::Worker
  end
end

Distribot.run
