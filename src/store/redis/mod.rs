//! Flow state in Redis, for engines and workers on many machines.
//!
//! Every operation that must be atomic is one Lua script: the compare-and-set
//! of a transition, the per-job-id fan-in (a bitmap bit per job, so a
//! redelivered completion is counted once), the parking of a task while its
//! flow is paused. Decisions stay in [`crate::rules`]; the scripts only
//! guard and count. The one rule a script repeats is "a visit is complete
//! when every handler enumerated and all its jobs are done"
//! ([`rules::visit_complete`]): it must be checked in the same atomic step as
//! the count that completes it, or a crash between the two would leave the
//! visit complete and unmarked. The conformance suite holds both to the same
//! behaviour.
//!
//! Layout, under a prefix `P` (see `ARCHITECTURE.md`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:flow:ID` | hash | workflow name, definition, data, created_at |
//! | `P:flow:ID:hot` | hash | status, current seq, per visit and handler counters |
//! | `P:flow:ID:visits` | list | one JSON per phase visit (phase, start, handlers) |
//! | `P:flow:ID:transitions` | list | one JSON per transition |
//! | `P:flow:ID:done:SEQ:SLOT` | string | bitmap of done jobs |
//! | `P:flow:ID:out:SEQ:SLOT` | hash | job index → output JSON |
//! | `P:flow:ID:parked` | list | tasks parked while the flow is paused |
//! | `P:flows`, `P:flows:status:S`, `P:flows:workflow:W` | sorted sets | flow ids, for listing (ids sort by time) |
//! | `P:unfinished` | set | running and paused flows |
//! | `P:ended` | sorted set | ended flows by end time, for retention |
//! | `P:workflows` | hash | registered definitions |
//! | `P:workers` | hash | worker heartbeats |

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value as RedisValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CommandApplied, Enumerated, FlowQuery, Store, StoreError, WORKER_LIVENESS};
use crate::definition::{parse_definition_value, Workflow};
use crate::ids::{Cursor, FlowId, HandlerName, JobKey, PhaseName};
use crate::model::{
    Admission, Command, EnumerateInput, FlowContext, FlowError, FlowRecord, FlowStatus, HandlerRun,
    Outputs, PhaseRun, PhaseState, Progress, Task, Transition, WorkerInfo,
};
use crate::rules::{self, AdmissionFacts};
use crate::time::Timestamp;
use crate::version::Version;

/// Flow contexts (definition and data) cached per process; they never change.
const CONTEXT_CACHE_LIMIT: usize = 10_000;

/// Workers silent for this long are dropped from the heartbeat hash.
const WORKER_FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
    cache: Arc<Mutex<Caches>>,
}

#[derive(Default)]
struct Caches {
    definitions: HashMap<String, Arc<Workflow>>,
    contexts: HashMap<FlowId, FlowContext>,
}

#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn flow(&self, id: &FlowId) -> String {
        format!("{}:flow:{id}", self.prefix)
    }
    fn hot(&self, id: &FlowId) -> String {
        format!("{}:flow:{id}:hot", self.prefix)
    }
    fn visits(&self, id: &FlowId) -> String {
        format!("{}:flow:{id}:visits", self.prefix)
    }
    fn transitions(&self, id: &FlowId) -> String {
        format!("{}:flow:{id}:transitions", self.prefix)
    }
    fn done(&self, id: &FlowId, seq: u32, slot: u16) -> String {
        format!("{}:flow:{id}:done:{seq}:{slot}", self.prefix)
    }
    fn outputs(&self, id: &FlowId, seq: u32, slot: u16) -> String {
        format!("{}:flow:{id}:out:{seq}:{slot}", self.prefix)
    }
    fn parked(&self, id: &FlowId) -> String {
        format!("{}:flow:{id}:parked", self.prefix)
    }
    fn flows(&self) -> String {
        format!("{}:flows", self.prefix)
    }
    fn by_status(&self, status: FlowStatus) -> String {
        format!("{}:flows:status:{status}", self.prefix)
    }
    fn by_workflow(&self, workflow: &str) -> String {
        format!("{}:flows:workflow:{workflow}", self.prefix)
    }
    fn unfinished(&self) -> String {
        format!("{}:unfinished", self.prefix)
    }
    fn ended(&self) -> String {
        format!("{}:ended", self.prefix)
    }
    fn workflows(&self) -> String {
        format!("{}:workflows", self.prefix)
    }
    fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
}

/// A flow's keys as one pipelined read returns them: meta, hot, visits,
/// transitions.
type StoredFlow = (
    HashMap<String, String>,
    HashMap<String, String>,
    Vec<String>,
    Vec<String>,
);

/// The per-visit JSON kept in `P:flow:ID:visits`.
#[derive(Serialize, Deserialize)]
struct StoredVisit {
    seq: u32,
    phase: PhaseName,
    started_at: Timestamp,
    handlers: Vec<HandlerName>,
}

struct Scripts {
    create: Script,
    enter: Script,
    end: Script,
    remove: Script,
    enumerated: Script,
    done: Script,
    failure: Script,
    facts: Script,
    park: Script,
    status: Script,
}

/// Shared by the counting scripts: the visit's state after checking whether
/// its counts complete it (mirrors `rules::visit_complete`).
const SETTLE_VISIT: &str = r#"
local function settle(hot, seq, at)
  local state = redis.call('HGET', hot, 's:' .. seq)
  if state ~= 'running' then return state end
  local slots = tonumber(redis.call('HGET', hot, 'n:' .. seq) or '0')
  for slot = 0, slots - 1 do
    local c = redis.call('HMGET', hot, 'en:' .. seq .. ':' .. slot, 't:' .. seq .. ':' .. slot, 'd:' .. seq .. ':' .. slot)
    if c[1] ~= '1' or tonumber(c[3] or '0') < tonumber(c[2] or '0') then return state end
  end
  redis.call('HSET', hot, 's:' .. seq, 'completed', 'f:' .. seq, at)
  return 'completed'
end
"#;

impl Scripts {
    fn new() -> Self {
        let with_settle = |body: &str| Script::new(&format!("{SETTLE_VISIT}\n{body}"));
        Self {
            // KEYS: meta hot visits transitions flows by_status by_workflow unfinished
            // ARGV: id workflow definition data created_at phase slots visit transition
            create: Script::new(
                r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'workflow', ARGV[2], 'definition', ARGV[3], 'data', ARGV[4], 'created_at', ARGV[5])
local slots = tonumber(ARGV[7])
local state = 'running'
if slots == 0 then state = 'completed' end
redis.call('HSET', KEYS[2], 'status', 'running', 'seq', '0', 'p:0', ARGV[6], 'n:0', slots, 's:0', state)
if slots == 0 then redis.call('HSET', KEYS[2], 'f:0', ARGV[5]) end
redis.call('RPUSH', KEYS[3], ARGV[8])
redis.call('RPUSH', KEYS[4], ARGV[9])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
redis.call('ZADD', KEYS[6], 0, ARGV[1])
redis.call('ZADD', KEYS[7], 0, ARGV[1])
redis.call('SADD', KEYS[8], ARGV[1])
return 1
"#,
            ),
            // KEYS: hot visits transitions
            // ARGV: from_seq from_phase to slots at visit transition error
            enter: Script::new(
                r#"
local st = redis.call('HMGET', KEYS[1], 'status', 'seq', 'p:' .. ARGV[1], 's:' .. ARGV[1])
if st[1] ~= 'running' or st[2] ~= ARGV[1] or st[3] ~= ARGV[2] or st[4] == 'running' then return -1 end
local seq = tonumber(ARGV[1]) + 1
local slots = tonumber(ARGV[4])
local state = 'running'
if slots == 0 then state = 'completed' end
redis.call('HSET', KEYS[1], 'seq', seq, 'p:' .. seq, ARGV[3], 'n:' .. seq, slots, 's:' .. seq, state)
if slots == 0 then redis.call('HSET', KEYS[1], 'f:' .. seq, ARGV[5]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[8]) end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('RPUSH', KEYS[3], ARGV[7])
return seq
"#,
            ),
            // KEYS: hot by_status(running) by_status(new) unfinished ended
            // ARGV: id from_seq from_phase status at
            end: Script::new(
                r#"
local st = redis.call('HMGET', KEYS[1], 'status', 'seq', 'p:' .. ARGV[2])
if st[1] ~= 'running' or st[2] ~= ARGV[2] or st[3] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'ended_at', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
return 1
"#,
            ),
            // KEYS: ended flows
            // ARGV: prefix cutoff limit
            // The keys of a flow are named from its id here, so this script
            // assumes one Redis, not a cluster.
            remove: Script::new(
                r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local base = ARGV[1] .. ':flow:' .. id
  local hot = base .. ':hot'
  local workflow = redis.call('HGET', base, 'workflow')
  local status = redis.call('HGET', hot, 'status')
  local last = tonumber(redis.call('HGET', hot, 'seq') or '-1')
  for seq = 0, last do
    local slots = tonumber(redis.call('HGET', hot, 'n:' .. seq) or '0')
    for slot = 0, slots - 1 do
      redis.call('DEL', base .. ':done:' .. seq .. ':' .. slot, base .. ':out:' .. seq .. ':' .. slot)
    end
  end
  redis.call('DEL', base, hot, base .. ':visits', base .. ':transitions', base .. ':parked')
  redis.call('ZREM', KEYS[2], id)
  if status then redis.call('ZREM', ARGV[1] .. ':flows:status:' .. status, id) end
  if workflow then redis.call('ZREM', ARGV[1] .. ':flows:workflow:' .. workflow, id) end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"#,
            ),
            // KEYS: hot
            // ARGV: seq phase slot version total at
            // Returns {status, current seq, visit state, publish}
            enumerated: with_settle(
                r#"
local hot = KEYS[1]
local seq, slot = ARGV[1], ARGV[3]
local h = seq .. ':' .. slot
local st = redis.call('HMGET', hot, 'status', 'seq', 'p:' .. seq, 's:' .. seq, 'en:' .. h, 'q:' .. h)
if not st[1] then return {'', '', '', '0'} end
if st[1] == 'finished' or st[1] == 'failed' or st[1] == 'canceled' or st[2] ~= seq or st[3] ~= ARGV[2] then
  return {st[1], st[2], st[4] or '', '0'}
end
if st[4] ~= 'running' then return {st[1], st[2], st[4], '0'} end
if st[5] == '1' then
  -- Enumerated before, but its jobs were never confirmed queued: the
  -- worker that did it died in between, so this one queues them.
  local publish = '1'
  if st[6] == '1' then publish = '0' end
  return {st[1], st[2], st[4], publish}
end
redis.call('HSET', hot, 'en:' .. h, '1', 't:' .. h, ARGV[5], 'v:' .. h, ARGV[4], 'ts:' .. h, ARGV[6])
local done = tonumber(redis.call('HGET', hot, 'd:' .. h) or '0')
if done >= tonumber(ARGV[5]) then redis.call('HSET', hot, 'tf:' .. h, ARGV[6]) end
return {st[1], st[2], settle(hot, seq, ARGV[6]), '1'}
"#,
            ),
            // KEYS: hot done outputs
            // ARGV: seq slot index has_output output at
            // Returns {status, current seq, visit state}
            done: with_settle(
                r#"
local hot = KEYS[1]
local seq, slot = ARGV[1], ARGV[2]
local status = redis.call('HGET', hot, 'status')
if not status then return {'', '', ''} end
local h = seq .. ':' .. slot
if redis.call('SETBIT', KEYS[2], tonumber(ARGV[3]), 1) == 0 then
  if ARGV[4] == '1' then redis.call('HSET', KEYS[3], ARGV[3], ARGV[5]) end
  local done = redis.call('HINCRBY', hot, 'd:' .. h, 1)
  local c = redis.call('HMGET', hot, 'en:' .. h, 't:' .. h)
  if c[1] == '1' and done >= tonumber(c[2] or '0') then redis.call('HSET', hot, 'tf:' .. h, ARGV[6]) end
end
local state = ''
if redis.call('HEXISTS', hot, 's:' .. seq) == 1 then state = settle(hot, seq, ARGV[6]) end
return {status, redis.call('HGET', hot, 'seq'), state}
"#,
            ),
            // KEYS: hot
            // ARGV: seq slot is_job error at
            failure: Script::new(
                r#"
local hot = KEYS[1]
local seq = ARGV[1]
local status = redis.call('HGET', hot, 'status')
if not status or redis.call('HEXISTS', hot, 's:' .. seq) == 0 then return {'', '', ''} end
if ARGV[3] == '1' and ARGV[2] ~= '' then redis.call('HINCRBY', hot, 'x:' .. seq .. ':' .. ARGV[2], 1) end
if redis.call('HGET', hot, 's:' .. seq) == 'running' then
  redis.call('HSET', hot, 's:' .. seq, 'failed', 'f:' .. seq, ARGV[5], 'e:' .. seq, ARGV[4])
end
return {status, redis.call('HGET', hot, 'seq'), redis.call('HGET', hot, 's:' .. seq)}
"#,
            ),
            // KEYS: hot done
            // ARGV: seq slot index(or '')
            // Returns {status, current seq, current visit state, enumerated
            // and queued, job done}
            facts: Script::new(
                r#"
local hot = KEYS[1]
local st = redis.call('HMGET', hot, 'status', 'seq', 'q:' .. ARGV[1] .. ':' .. ARGV[2])
if not st[1] then return {'', '', '', '0', '0'} end
local state = redis.call('HGET', hot, 's:' .. st[2]) or ''
local done = 0
if ARGV[3] ~= '' then done = redis.call('GETBIT', KEYS[2], tonumber(ARGV[3])) end
return {st[1], st[2], state, st[3] or '0', tostring(done)}
"#,
            ),
            // KEYS: hot parked ; ARGV: task
            park: Script::new(
                r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'paused' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"#,
            ),
            // KEYS: hot by_status(from) by_status(to) unfinished parked ended
            // ARGV: id from to at
            // Returns {1, parked tasks...} when applied (tasks on resume), {0} when the status moved
            status: Script::new(
                r#"
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return {0} end
redis.call('HSET', KEYS[1], 'status', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
if ARGV[3] == 'canceled' then
  redis.call('HSET', KEYS[1], 'ended_at', ARGV[4])
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('DEL', KEYS[5])
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
  return {1}
end
if ARGV[3] == 'running' then
  local parked = redis.call('LRANGE', KEYS[5], 0, -1)
  table.insert(parked, 1, 1)
  return parked
end
return {1}
"#,
            ),
        }
    }
}

fn backend(error: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {error}"))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("cannot encode: {e}")))
}

fn from_json<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

/// A script's reply as strings (Lua's `nil` is sent as `''`).
fn strings(value: RedisValue) -> Vec<String> {
    match value {
        RedisValue::Array(items) => items.into_iter().map(string).collect(),
        other => vec![string(other)],
    }
}

fn string(value: RedisValue) -> String {
    match value {
        RedisValue::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        RedisValue::SimpleString(text) => text,
        RedisValue::Int(n) => n.to_string(),
        RedisValue::Okay => "OK".to_owned(),
        _ => String::new(),
    }
}

fn parse_status(text: &str) -> Option<FlowStatus> {
    FlowStatus::parse(text)
}

fn parse_state(text: &str) -> Option<PhaseState> {
    match text {
        "running" => Some(PhaseState::Running),
        "completed" => Some(PhaseState::Completed),
        "failed" => Some(PhaseState::Failed),
        _ => None,
    }
}

/// What the engine should hear after recording something about visit `seq`.
fn progress(status: &str, current_seq: &str, state: &str, seq: u32) -> Progress {
    let Some(status) = parse_status(status) else {
        return Progress::Stale;
    };
    if status.is_ended() || current_seq.parse::<u32>().ok() != Some(seq) {
        return Progress::Stale;
    }
    parse_state(state)
        .map(Progress::of)
        .unwrap_or(Progress::Stale)
}

impl RedisStore {
    /// Connects to Redis at `url`, namespacing every key under `prefix`.
    /// The connection reconnects by itself, with backoff, when Redis goes
    /// away.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(3)
            .set_factor(50)
            .set_max_delay(2_000)
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(10));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(backend)?;
        Ok(Self {
            conn,
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            scripts: Arc::new(Scripts::new()),
            cache: Arc::new(Mutex::new(Caches::default())),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A definition parsed once per process, shared by every flow using it.
    fn definition(&self, text: &str) -> Result<Arc<Workflow>, StoreError> {
        if let Some(workflow) = self.caches().definitions.get(text) {
            return Ok(workflow.clone());
        }
        let value: Value = from_json(text, "a stored definition")?;
        let workflow = Arc::new(
            parse_definition_value(&value)
                .map_err(|e| corrupt(format!("a stored definition: {e}")))?,
        );
        self.caches()
            .definitions
            .insert(text.to_owned(), workflow.clone());
        Ok(workflow)
    }

    async fn load(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError> {
        let mut conn = self.conn();
        let (meta, hot, visits, transitions): StoredFlow = redis::pipe()
            .hgetall(self.keys.flow(id))
            .hgetall(self.keys.hot(id))
            .lrange(self.keys.visits(id), 0, -1)
            .lrange(self.keys.transitions(id), 0, -1)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        if meta.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| {
            meta.get(name)
                .ok_or_else(|| corrupt(format!("flow {id} has no `{name}`")))
        };
        let workflow = self.definition(field("definition")?)?;
        let data: Map<String, Value> = from_json(field("data")?, "flow data")?;
        let created_at = Timestamp(field("created_at")?.parse().unwrap_or(0));
        let number = |name: String| hot.get(&name).and_then(|v| v.parse::<u64>().ok());
        let text = |name: String| hot.get(&name).filter(|v| !v.is_empty());
        let status = hot
            .get("status")
            .and_then(|s| parse_status(s))
            .ok_or_else(|| corrupt(format!("flow {id} has no status")))?;
        let mut phases = Vec::with_capacity(visits.len());
        for visit in &visits {
            let visit: StoredVisit = from_json(visit, "a phase visit")?;
            let seq = visit.seq;
            let handlers = visit
                .handlers
                .into_iter()
                .enumerate()
                .map(|(slot, handler)| {
                    let h = format!("{seq}:{slot}");
                    HandlerRun {
                        handler,
                        version: text(format!("v:{h}")).and_then(|v| v.parse().ok()),
                        enumerated: text(format!("en:{h}")).is_some(),
                        total: number(format!("t:{h}")).unwrap_or(0),
                        done: number(format!("d:{h}")).unwrap_or(0),
                        failed: number(format!("x:{h}")).unwrap_or(0),
                        retried: number(format!("r:{h}")).unwrap_or(0),
                        started_at: number(format!("ts:{h}")).map(Timestamp),
                        finished_at: number(format!("tf:{h}")).map(Timestamp),
                    }
                })
                .collect();
            phases.push(PhaseRun {
                seq,
                phase: visit.phase,
                state: text(format!("s:{seq}"))
                    .and_then(|s| parse_state(s))
                    .unwrap_or(PhaseState::Running),
                started_at: visit.started_at,
                finished_at: number(format!("f:{seq}")).map(Timestamp),
                handlers,
                error: text(format!("e:{seq}"))
                    .map(|e| from_json(e, "a phase error"))
                    .transpose()?,
            });
        }
        if phases.is_empty() {
            return Err(corrupt(format!("flow {id} has no phase visit")));
        }
        let transitions = transitions
            .iter()
            .map(|t| from_json(t, "a transition"))
            .collect::<Result<Vec<Transition>, _>>()?;
        Ok(Some(FlowRecord {
            id: id.clone(),
            workflow,
            data: Arc::new(data),
            status,
            transitions,
            phases,
            error: text("error".to_owned())
                .map(|e| from_json(e, "the flow error"))
                .transpose()?,
            created_at,
            ended_at: number("ended_at".to_owned()).map(Timestamp),
            waiting: text("waiting".to_owned())
                .map(|w| from_json(w, "waiting reasons"))
                .transpose()?
                .unwrap_or_default(),
        }))
    }

    /// Outputs of the visits before `before_seq` (all of them for `u32::MAX`).
    async fn collect_outputs(&self, id: &FlowId, before_seq: u32) -> Result<Outputs, StoreError> {
        let mut conn = self.conn();
        let visits: Vec<String> = conn
            .lrange(self.keys.visits(id), 0, -1)
            .await
            .map_err(backend)?;
        let visits: Vec<StoredVisit> = visits
            .iter()
            .map(|v| from_json(v, "a phase visit"))
            .collect::<Result<_, _>>()?;
        let wanted: Vec<&StoredVisit> = visits.iter().filter(|v| v.seq < before_seq).collect();
        let mut pipe = redis::pipe();
        for visit in &wanted {
            for slot in 0..visit.handlers.len() as u16 {
                pipe.hgetall(self.keys.outputs(id, visit.seq, slot));
            }
        }
        let tables: Vec<HashMap<u32, String>> =
            pipe.query_async(&mut conn).await.map_err(backend)?;
        let mut tables = tables.into_iter();
        let mut outputs = Outputs::new();
        for visit in wanted {
            let mut by_handler: BTreeMap<HandlerName, Vec<Value>> = BTreeMap::new();
            for handler in &visit.handlers {
                let table = tables.next().unwrap_or_default();
                let mut indexed: Vec<(u32, String)> = table.into_iter().collect();
                indexed.sort_by_key(|(index, _)| *index);
                let values = indexed
                    .iter()
                    .map(|(_, output)| from_json(output, "a job output"))
                    .collect::<Result<Vec<Value>, _>>()?;
                by_handler
                    .entry(handler.clone())
                    .or_default()
                    .extend(values);
            }
            outputs.insert(visit.phase.clone(), by_handler);
        }
        Ok(outputs)
    }

    async fn admission_facts(&self, task: &Task) -> Result<Option<AdmissionFacts>, StoreError> {
        let flow = task.flow();
        let (seq, slot) = task.seq_and_slot();
        let index = match task {
            Task::Process { key, .. } => key.index.to_string(),
            Task::Enumerate { .. } => String::new(),
        };
        let reply: RedisValue = self
            .scripts
            .facts
            .key(self.keys.hot(flow))
            .key(self.keys.done(flow, seq, slot))
            .arg(seq)
            .arg(slot)
            .arg(index)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let facts = strings(reply);
        let (Some(status), Some(current_seq)) = (
            parse_status(&facts[0]),
            facts.get(1).and_then(|s| s.parse().ok()),
        ) else {
            return Ok(None);
        };
        Ok(Some(AdmissionFacts {
            status,
            current_seq,
            visit_state: facts
                .get(2)
                .and_then(|s| parse_state(s))
                .unwrap_or(PhaseState::Failed),
            enumerated: facts.get(3).is_some_and(|s| s == "1"),
            job_done: facts.get(4).is_some_and(|s| s == "1"),
        }))
    }
}

fn visit_json(
    seq: u32,
    phase: &crate::definition::Phase,
    at: Timestamp,
) -> Result<String, StoreError> {
    to_json(&StoredVisit {
        seq,
        phase: phase.name.clone(),
        started_at: at,
        handlers: phase.handlers.iter().map(|h| h.name.clone()).collect(),
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn create_flow(&self, flow: FlowRecord) -> Result<(), StoreError> {
        let initial = flow.workflow.initial_phase();
        let created: i64 = self
            .scripts
            .create
            .key(self.keys.flow(&flow.id))
            .key(self.keys.hot(&flow.id))
            .key(self.keys.visits(&flow.id))
            .key(self.keys.transitions(&flow.id))
            .key(self.keys.flows())
            .key(self.keys.by_status(FlowStatus::Running))
            .key(self.keys.by_workflow(flow.workflow.name.as_str()))
            .key(self.keys.unfinished())
            .arg(flow.id.as_str())
            .arg(flow.workflow.name.as_str())
            .arg(flow.workflow.to_json().to_string())
            .arg(Value::Object((*flow.data).clone()).to_string())
            .arg(flow.created_at.millis())
            .arg(initial.name.as_str())
            .arg(initial.handlers.len())
            .arg(visit_json(0, initial, flow.created_at)?)
            .arg(to_json(&flow.transitions[0])?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if created == 0 {
            return Err(StoreError::DuplicateFlow(flow.id));
        }
        Ok(())
    }

    async fn flow(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError> {
        self.load(id).await
    }

    async fn flow_context(&self, id: &FlowId) -> Result<Option<FlowContext>, StoreError> {
        if let Some(context) = self.caches().contexts.get(id) {
            return Ok(Some(context.clone()));
        }
        let (definition, data): (Option<String>, Option<String>) = self
            .conn()
            .hget(self.keys.flow(id), &["definition", "data"])
            .await
            .map_err(backend)?;
        let (Some(definition), Some(data)) = (definition, data) else {
            return Ok(None);
        };
        let context = FlowContext {
            id: id.clone(),
            workflow: self.definition(&definition)?,
            data: Arc::new(from_json(&data, "flow data")?),
        };
        let mut caches = self.caches();
        if caches.contexts.len() >= CONTEXT_CACHE_LIMIT {
            caches.contexts.clear();
        }
        caches.contexts.insert(id.clone(), context.clone());
        Ok(Some(context))
    }

    async fn unfinished_flows(&self) -> Result<Vec<FlowId>, StoreError> {
        let mut ids: Vec<String> = self
            .conn()
            .smembers(self.keys.unfinished())
            .await
            .map_err(backend)?;
        ids.sort();
        Ok(ids.into_iter().map(FlowId::new).collect())
    }

    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        let index = match (&query.status, &query.workflow) {
            (Some(status), _) => self.keys.by_status(*status),
            (None, Some(workflow)) => self.keys.by_workflow(workflow),
            (None, None) => self.keys.flows(),
        };
        let limit = query.limit.max(1);
        let mut upper = match &query.before {
            Some(before) => format!("({before}"),
            None => "+".to_owned(),
        };
        let mut found = Vec::new();
        // Pages through the index until enough flows pass the other filter.
        loop {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&index)
                .arg(&upper)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let exhausted = ids.len() < limit;
            let Some(last) = ids.last() else { break };
            upper = format!("({last}");
            for id in ids {
                let Some(record) = self.load(&FlowId::new(id)).await? else {
                    continue;
                };
                let workflow_matches = query
                    .workflow
                    .as_deref()
                    .is_none_or(|name| record.workflow.name.as_str() == name);
                if workflow_matches && query.status.is_none_or(|s| s == record.status) {
                    found.push(record);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(found)
    }

    async fn count_flows(&self, query: &FlowQuery) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let count: u64 = match (&query.status, &query.workflow) {
            (Some(status), Some(workflow)) => redis::cmd("ZINTERCARD")
                .arg(2)
                .arg(self.keys.by_status(*status))
                .arg(self.keys.by_workflow(workflow))
                .query_async(&mut conn)
                .await
                .map_err(backend)?,
            (Some(status), None) => conn
                .zcard(self.keys.by_status(*status))
                .await
                .map_err(backend)?,
            (None, Some(workflow)) => conn
                .zcard(self.keys.by_workflow(workflow))
                .await
                .map_err(backend)?,
            (None, None) => conn.zcard(self.keys.flows()).await.map_err(backend)?,
        };
        Ok(count)
    }

    async fn note_waiting(&self, flow: &FlowId, reasons: Vec<String>) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(self.keys.hot(flow), "waiting", to_json(&reasons)?)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn put_workflow(&self, workflow: Arc<Workflow>) -> Result<bool, StoreError> {
        let added: i64 = self
            .conn()
            .hset(
                self.keys.workflows(),
                workflow.name.as_str(),
                workflow.to_json().to_string(),
            )
            .await
            .map_err(backend)?;
        Ok(added == 1)
    }

    async fn workflow(&self, name: &str) -> Result<Option<Arc<Workflow>>, StoreError> {
        let text: Option<String> = self
            .conn()
            .hget(self.keys.workflows(), name)
            .await
            .map_err(backend)?;
        text.map(|text| self.definition(&text)).transpose()
    }

    async fn workflows(&self) -> Result<Vec<Arc<Workflow>>, StoreError> {
        let all: BTreeMap<String, String> = self
            .conn()
            .hgetall(self.keys.workflows())
            .await
            .map_err(backend)?;
        all.values().map(|text| self.definition(text)).collect()
    }

    async fn remove_ended(&self, ended_before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let removed: u64 = self
            .scripts
            .remove
            .key(self.keys.ended())
            .key(self.keys.flows())
            .arg(&self.keys.prefix)
            .arg(ended_before.millis())
            .arg(limit.max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if removed > 0 {
            self.caches().contexts.clear();
        }
        Ok(removed)
    }

    async fn heartbeat(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(self.keys.workers(), &worker.id, to_json(worker)?)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let all: BTreeMap<String, String> = self
            .conn()
            .hgetall(self.keys.workers())
            .await
            .map_err(backend)?;
        let now = Timestamp::now();
        let mut live = Vec::new();
        let mut forgotten = Vec::new();
        for (id, text) in all {
            let Ok(worker) = serde_json::from_str::<WorkerInfo>(&text) else {
                forgotten.push(id);
                continue;
            };
            let silent = worker.last_seen.until(now);
            if silent <= WORKER_LIVENESS {
                live.push(worker);
            } else if silent > WORKER_FORGET_AFTER {
                forgotten.push(id);
            }
        }
        if !forgotten.is_empty() {
            let _: () = self
                .conn()
                .hdel(self.keys.workers(), forgotten)
                .await
                .map_err(backend)?;
        }
        Ok(live)
    }

    async fn enter_phase(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<Option<Cursor>, StoreError> {
        let Some(context) = self.flow_context(flow).await? else {
            return Err(StoreError::UnknownFlow(flow.clone()));
        };
        let phase = context.workflow.phase(to.as_str()).ok_or_else(|| {
            corrupt(format!(
                "flow {flow} cannot enter `{to}`: its workflow has no such phase"
            ))
        })?;
        let seq = from.seq + 1;
        let transition = Transition {
            from: Some(from.phase.clone()),
            to: to.clone(),
            at,
            error: error.clone(),
        };
        let error_json = error.as_ref().map(to_json).transpose()?.unwrap_or_default();
        let entered: i64 = self
            .scripts
            .enter
            .key(self.keys.hot(flow))
            .key(self.keys.visits(flow))
            .key(self.keys.transitions(flow))
            .arg(from.seq)
            .arg(from.phase.as_str())
            .arg(to.as_str())
            .arg(phase.handlers.len())
            .arg(at.millis())
            .arg(visit_json(seq, phase, at)?)
            .arg(to_json(&transition)?)
            .arg(error_json)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok((entered >= 0).then(|| Cursor {
            seq,
            phase: to.clone(),
        }))
    }

    async fn end_flow(
        &self,
        flow: &FlowId,
        from: &Cursor,
        status: FlowStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let ended: i64 = self
            .scripts
            .end
            .key(self.keys.hot(flow))
            .key(self.keys.by_status(FlowStatus::Running))
            .key(self.keys.by_status(status))
            .key(self.keys.unfinished())
            .key(self.keys.ended())
            .arg(flow.as_str())
            .arg(from.seq)
            .arg(from.phase.as_str())
            .arg(status.as_str())
            .arg(at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(ended == 1)
    }

    async fn record_enumerated(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
        version: &Version,
        jobs: &[Value],
        at: Timestamp,
    ) -> Result<Enumerated, StoreError> {
        let reply: RedisValue = self
            .scripts
            .enumerated
            .key(self.keys.hot(flow))
            .arg(cursor.seq)
            .arg(cursor.phase.as_str())
            .arg(slot)
            .arg(version.to_string())
            .arg(jobs.len())
            .arg(at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let reply = strings(reply);
        if reply[0].is_empty() {
            return Err(StoreError::UnknownFlow(flow.clone()));
        }
        Ok(Enumerated {
            progress: progress(&reply[0], &reply[1], &reply[2], cursor.seq),
            publish: reply.get(3).is_some_and(|f| f == "1"),
        })
    }

    async fn jobs_queued(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
    ) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(self.keys.hot(flow), format!("q:{}:{slot}", cursor.seq), "1")
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn record_job_done(
        &self,
        key: &JobKey,
        output: Option<Value>,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        let reply: RedisValue = self
            .scripts
            .done
            .key(self.keys.hot(&key.flow))
            .key(self.keys.done(&key.flow, key.seq, key.slot))
            .key(self.keys.outputs(&key.flow, key.seq, key.slot))
            .arg(key.seq)
            .arg(key.slot)
            .arg(key.index)
            .arg(u8::from(output.is_some()))
            .arg(output.map(|o| o.to_string()).unwrap_or_default())
            .arg(at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let reply = strings(reply);
        if reply[0].is_empty() {
            return Err(StoreError::UnknownFlow(key.flow.clone()));
        }
        Ok(progress(&reply[0], &reply[1], &reply[2], key.seq))
    }

    async fn record_retry(&self, task: &Task, _next_attempt: u32) -> Result<(), StoreError> {
        // The attempt number travels with the task itself on the broker.
        let (seq, slot) = task.seq_and_slot();
        let _: i64 = self
            .conn()
            .hincr(self.keys.hot(task.flow()), format!("r:{seq}:{slot}"), 1)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn record_failure(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: Option<u16>,
        error: FlowError,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        let is_job = error.job_id.is_some();
        let reply: RedisValue = self
            .scripts
            .failure
            .key(self.keys.hot(flow))
            .arg(cursor.seq)
            .arg(slot.map(|s| s.to_string()).unwrap_or_default())
            .arg(u8::from(is_job))
            .arg(to_json(&error)?)
            .arg(at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let reply = strings(reply);
        Ok(progress(&reply[0], &reply[1], &reply[2], cursor.seq))
    }

    async fn admit(&self, task: &Task) -> Result<Admission, StoreError> {
        // The decision is the shared rule; only parking must be atomic with
        // the status it depends on, so a resume in between sends us round again.
        for _ in 0..8 {
            let Some(facts) = self.admission_facts(task).await? else {
                return Ok(Admission::Drop);
            };
            let admission = rules::admission(&facts, task);
            if admission != Admission::Parked {
                return Ok(admission);
            }
            let parked: i64 = self
                .scripts
                .park
                .key(self.keys.hot(task.flow()))
                .key(self.keys.parked(task.flow()))
                .arg(to_json(task)?)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            if parked == 1 {
                return Ok(Admission::Parked);
            }
        }
        Err(StoreError::Backend(format!(
            "flow {} keeps changing status; try again",
            task.flow()
        )))
    }

    async fn apply_command(
        &self,
        flow: &FlowId,
        command: Command,
        at: Timestamp,
    ) -> Result<CommandApplied, StoreError> {
        for _ in 0..8 {
            let current: Option<String> = self
                .conn()
                .hget(self.keys.hot(flow), "status")
                .await
                .map_err(backend)?;
            let current = current
                .as_deref()
                .and_then(parse_status)
                .ok_or_else(|| StoreError::UnknownFlow(flow.clone()))?;
            let next = rules::apply_command(current, command)?;
            let reply: RedisValue = self
                .scripts
                .status
                .key(self.keys.hot(flow))
                .key(self.keys.by_status(current))
                .key(self.keys.by_status(next))
                .key(self.keys.unfinished())
                .key(self.keys.parked(flow))
                .key(self.keys.ended())
                .arg(flow.as_str())
                .arg(current.as_str())
                .arg(next.as_str())
                .arg(at.millis())
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let reply = strings(reply);
            if reply.first().map(String::as_str) != Some("1") {
                continue;
            }
            let released = reply[1..]
                .iter()
                .map(|task| from_json(task, "a parked task"))
                .collect::<Result<Vec<Task>, _>>()?;
            return Ok(CommandApplied {
                status: next,
                released,
            });
        }
        Err(StoreError::Backend(format!(
            "flow {flow} keeps changing status; try again"
        )))
    }

    async fn enumerate_input(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
    ) -> Result<EnumerateInput, StoreError> {
        let outputs = self.collect_outputs(flow, cursor.seq).await?;
        let transition: Option<String> = self
            .conn()
            .lindex(self.keys.transitions(flow), cursor.seq as isize)
            .await
            .map_err(backend)?;
        let error = transition
            .map(|t| from_json::<Transition>(&t, "a transition"))
            .transpose()?
            .and_then(|t| t.error);
        Ok(EnumerateInput { outputs, error })
    }

    async fn outputs(&self, flow: &FlowId) -> Result<Outputs, StoreError> {
        self.collect_outputs(flow, u32::MAX).await
    }

    async fn recover(&self, flow: &FlowId) -> Result<Vec<Task>, StoreError> {
        let (status, parked): (Option<String>, Vec<String>) = redis::pipe()
            .hget(self.keys.hot(flow), "status")
            .lrange(self.keys.parked(flow), 0, -1)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if status.as_deref() != Some(FlowStatus::Running.as_str()) {
            return Ok(Vec::new());
        }
        parked
            .iter()
            .map(|task| from_json(task, "a parked task"))
            .collect()
    }

    async fn forget_released(&self, flow: &FlowId, count: usize) -> Result<(), StoreError> {
        if count == 0 {
            return Ok(());
        }
        let _: () = self
            .conn()
            .ltrim(self.keys.parked(flow), count as isize, -1)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
