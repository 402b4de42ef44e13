//! Named maxima of the scheduler core. Every list and string that arrives
//! from outside has one, so no request can grow the replicated state without bound.

/// Tasks in one job.
pub const JOB_TASKS_MAX: usize = 10_000;
/// Bytes in a task name.
pub const TASK_NAME_LEN_MAX: usize = 128;
/// Dependencies of one task.
pub const TASK_DEPENDENCIES_MAX: usize = 256;
/// Highest task priority; the default is [`PRIORITY_DEFAULT`].
pub const PRIORITY_MAX: u32 = 100;
pub const PRIORITY_DEFAULT: u32 = 50;
/// Attempts of one task, retries included.
pub const ATTEMPTS_MAX: u32 = 100;
/// Bytes of an attempt's reported output kept in the state.
pub const OUTPUT_TAIL_LEN_MAX: usize = 4 * 1024;
/// Attempt records kept per task (the newest ones).
pub const ATTEMPT_HISTORY_MAX: usize = 20;
/// GPUs on one node.
pub const NODE_GPUS_MAX: usize = 64;
/// Labels on a node or in a task's node selector.
pub const LABELS_MAX: usize = 64;
/// Bytes of an idempotency key or client id.
pub const KEY_LEN_MAX: usize = 128;
/// Default bytes of a task's payload (argv, env, body...); configurable at run time.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u64 = 64 * 1024;
/// Default attempt timeout when a task gives none.
pub const ATTEMPT_TIMEOUT_MS_DEFAULT: u64 = 3_600_000;
/// Client write requests whose responses are remembered for deduplication:
/// a retry must arrive within this many later writes (seconds, in practice).
pub const APPLIED_REQUESTS_MAX: usize = 10_000;
/// Encoded bytes of those remembered responses (a job's response lists its
/// task ids; a config write's, its value).
pub const APPLIED_REQUESTS_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Lifetime of a token (ten years); 0 asks for one that does not expire.
pub const TOKEN_TTL_SECONDS_MAX: u64 = 10 * 365 * 24 * 3600;
/// Tokens stored at once; revoke some to create more.
pub const TOKENS_MAX: usize = 10_000;
/// Bytes of a model name.
pub const MODEL_NAME_LEN_MAX: usize = 256;
/// Input or output tokens of one task.
pub const TASK_TOKENS_MAX: u32 = 10_000_000;
/// Resources one task may ask for: GPU memory per GPU (16 TiB), CPU
/// (100,000 cores) and host memory (4 PiB), in MB and millis. Far above any
/// machine, low enough that sums over a node never overflow.
pub const GPU_MEMORY_MB_MAX: u64 = 16 * 1024 * 1024;
pub const CPU_MILLIS_MAX: u64 = 100_000_000;
pub const MEMORY_MB_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Bytes of a label key and of a label value (tasks' selectors and nodes').
pub const LABEL_KEY_LEN_MAX: usize = 128;
pub const LABEL_VALUE_LEN_MAX: usize = 256;
/// Longest attempt timeout, a simulated service time, and a retry backoff:
/// seven days. Every duration is bounded, so no sum of them overflows.
pub const DURATION_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Entries of an exec task's argv and env, and of an http task's headers
/// (empty strings cost no payload bytes but do cost memory).
pub const ARGV_MAX: usize = 4096;
pub const ENV_MAX: usize = 1024;
pub const HEADERS_MAX: usize = 256;
/// Bytes of node names and addresses named in requests.
pub const NODE_NAME_LEN_MAX: usize = 128;
pub const ADDRESS_LEN_MAX: usize = 512;
/// Models an agent may list as loaded, and attempts it may report running.
pub const MODELS_LOADED_MAX: usize = 256;
pub const RUNNING_REPORTED_MAX: usize = 100_000;
