-- wrk script: POST /api/flows, starting a flow of the registered workflow
-- `bench` (see bench/api.sh). With `-- N`, each wrk thread stops after N
-- answers, which is how api.sh stores an exact number of flows.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"workflow": "bench", "data": {"source": "wrk"}}'

local token = os.getenv("DISTRIBOT_API_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

local limit = nil
local answered = 0

function init(args)
  if args[1] then
    limit = tonumber(args[1])
  end
end

function response(status, headers, body)
  answered = answered + 1
  if limit and answered >= limit then
    wrk.thread:stop()
  end
end
