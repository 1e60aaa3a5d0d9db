-- wrk's request for the benchmark's cross-check (scripts/bench.sh): CheckTOTP over REST for a
-- locked user with a TOTP, which the service refuses (code 9, HTTP 400, COMMAND-SF3fg) without
-- writing anything, so every request is the same and none needs a fresh code. The token comes
-- from the environment. Any other answer is counted and reported as unexpected.
wrk.method = "POST"
wrk.body = '{"code":"123456"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOTP_TOKEN")

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   unexpected = 0
end

function response(status, headers, body)
   if status ~= 400 or not string.find(body, "COMMAND-SF3fg", 1, true) then
      unexpected = unexpected + 1
   end
end

function done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(threads) do
      total = total + thread:get("unexpected")
   end
   io.write(string.format("unexpected answers: %d\n", total))
end
