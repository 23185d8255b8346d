"""Engine settings: the one place that owns every engine number and its default.

Other modules read these values; they never define their own copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from promptcache.util import ATTENTION_BACKENDS

GIB = 1024**3
DATA_DIR_ENV = "PROMPTCACHE_DATA_DIR"
# `EngineConfig.disk_fsync`'s values (engine/tiers/disk/sync.py says what each does).
DISK_FSYNC = ("never", "batch", "always")
# SQLite's `PRAGMA synchronous` levels a store may run at (WAL mode): OFF is left out, as it
# may corrupt the file on a power loss; EXTRA adds nothing to FULL in WAL mode.
SQLITE_SYNCHRONOUS = ("normal", "full")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings of the inference engine (KV pool and scheduler).

    Attributes:
        block_size: tokens per KV block (the paging unit). Default 16.
        kv_cache_bytes: byte budget of the KV block pool, all layers together. Default 2 GiB.
        max_num_seqs: most sequences running in one step. Default 16.
        max_num_batched_tokens: token budget of one step (prefill chunks + decodes). Default 1024.
        max_model_len: longest sequence (prompt + output) accepted; None means the model's
            context length (``max_position_embeddings``).
        enable_prefix_caching: reuse the KV of repeated prompt prefixes. Default on.
            Reuse is physical and maximal: the longest run of cached full blocks, for
            prompts of any length (docs/features/prompt-caching.md).
        usage_rules: how usage reports the reuse: "openai" (default) reports
            `cached_tokens` as OpenAI's API would (0 below min_prompt_tokens, else rounded
            down to increment); "exact" reports the physical reuse.
        min_prompt_tokens: under "openai" usage rules, a cached prefix shorter than this
            is reported as 0. Default 1024.
        increment: under "openai" usage rules, the reported cached prefix is rounded down
            to a multiple of this many tokens; a multiple of block_size. Default 128.
        min_breakpoint_tokens: an explicit breakpoint (OpenAI's `prompt_cache_breakpoint`,
            Anthropic's `cache_control`) whose prefix is shorter than this is not cached,
            under either usage rule (Anthropic uses 1,024 to 4,096 by model). Default 1024.
        eviction_history: how many recently evicted block hashes the pool remembers (with
            when and at which retention), for miss diagnosis; 0 keeps none. Default 65536.
        in_memory_ttl: seconds an `in_memory` block may sit idle before it is dropped.
            Default 600 (10 min).
        in_memory_max: seconds after it was first cached that an `in_memory` block is
            dropped, however often it is reused. Default 3600 (1 h).
        extended_ttl: seconds a `24h` block may sit idle before it is dropped.
            Default 86400 (24 h).
        host_cache_bytes: byte budget of the host tier, where `24h`, `12h` and `1h` blocks
            evicted from the KV pool for room are kept (pinned host memory beside a GPU,
            RAM on a CPU); 0 turns the tier off. Default 4 GiB.
        disk_cache_bytes: byte budget of the disk tier, where `24h` blocks are written
            through to checksummed files that survive restarts; 0 turns the tier off.
            Default 20 GiB.
        disk_cache_dir: folder of the disk tier (each model and KV layout gets a subfolder);
            None = `kv-cache` under the data dir (the server's `data_dir`, else
            $PROMPTCACHE_DATA_DIR, else the user's data folder).
        disk_min_free_bytes: the disk tier leaves at least this much free space on its
            filesystem, dropping its oldest files first; writes that cannot are counted
            as failed. Default 1 GiB.
        disk_fsync: when the disk tier's files reach stable storage (a power loss or OS
            crash loses what has not; a file that did not fully reach it fails its size
            or checksum check and is a miss, never loaded): "batch" (default) fsyncs the
            files written and their folders every disk_fsync_interval_s; "always" fsyncs
            each file and its folder entry before the block counts as stored; "never"
            leaves it to the OS (engine/tiers/disk/sync.py, docs/design/reliability.md).
        disk_fsync_interval_s: under "batch", the most seconds between a file's write and
            its fsync. Default 5.
        tune_host_malloc: on a CPU device under glibc, keep freed scratch memory in the
            heap instead of returning it to the OS every step (engine/host_memory.py;
            the process keeps its peak heap). Default on.
        onednn_cache_capacity: entries in each of oneDNN's two caches of compiled kernels
            (one per operation shape, holding output-sized buffers; engine/host_memory.py),
            which otherwise grow with every new prefill length up to 1,024 entries each
            (~750 MiB and more on the bundled model). Applied by `promptcache serve` and
            the router's Ray workers before the model loads; `LRU_CACHE_CAPACITY` or
            `ONEDNN_PRIMITIVE_CACHE_CAPACITY` set in the environment win; 0 keeps
            oneDNN's defaults. Default 64.
        attention_backend: how attention reads the KV pool: "auto" (default) runs
            promptcache's Triton kernel, which reads blocks in place, on CUDA where Triton
            is installed, the head size is a power of 2 of at least 16 and the block size
            a power of 2; on CPU its C decode kernel for decode rows where it builds
            (float32/bfloat16, no sliding window); PyTorch's paths for the rest. "torch":
            always PyTorch's paths; "triton": the Triton kernel or an error where it
            cannot run (model/attention/selector.py).
        cuda_graphs: on CUDA with the Triton attention, capture the decode forward in
            CUDA graphs at start, for batches of 1, 2, 4, then every multiple of 8 up to
            max_num_seqs, and replay them for decode-only steps (engine/cuda_graphs.py).
            Default on.
        grammar_cache_size: compiled output grammars (JSON schemas, tool lists) kept for
            reuse, least recently used dropped first (engine/grammar/compiler.py).
            Default 256.
        grammar_compile_timeout_s: seconds a schema or tool list may take to compile into
            a grammar; longer ones are refused (HTTP 400 `grammar_too_complex`, and at once
            when sent again) while the compile finishes in the background, holding one of
            the grammar_compile_threads (engine/grammar/budget.py). Default 10.
        grammar_compile_threads: grammars compiled at once, each in a thread of its own
            (never the engine's); a request whose compile finds none free within
            grammar_compile_timeout_s gets HTTP 429. Default 2.
    """

    block_size: int = 16
    kv_cache_bytes: int = 2 * GIB
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 1024
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    usage_rules: str = "openai"
    min_prompt_tokens: int = 1024
    increment: int = 128
    min_breakpoint_tokens: int = 1024
    eviction_history: int = 65536
    in_memory_ttl: int = 600
    in_memory_max: int = 3600
    extended_ttl: int = 86400
    host_cache_bytes: int = 4 * GIB
    disk_cache_bytes: int = 20 * GIB
    disk_cache_dir: str | None = None
    disk_min_free_bytes: int = 1 * GIB
    disk_fsync: str = "batch"
    disk_fsync_interval_s: float = 5.0
    tune_host_malloc: bool = True
    onednn_cache_capacity: int = 64
    attention_backend: str = "auto"
    cuda_graphs: bool = True
    grammar_cache_size: int = 256
    grammar_compile_timeout_s: float = 10.0
    grammar_compile_threads: int = 2

    def __post_init__(self) -> None:
        positive = (
            "block_size",
            "kv_cache_bytes",
            "max_num_seqs",
            "max_num_batched_tokens",
            "min_prompt_tokens",
            "increment",
            "in_memory_ttl",
            "in_memory_max",
            "extended_ttl",
            "grammar_cache_size",
            "grammar_compile_timeout_s",
            "grammar_compile_threads",
            "disk_fsync_interval_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend must be one of {', '.join(ATTENTION_BACKENDS)}, "
                f"got {self.attention_backend!r}"
            )
        if self.disk_fsync not in DISK_FSYNC:
            raise ValueError(
                f"disk_fsync must be one of {', '.join(DISK_FSYNC)}, got {self.disk_fsync!r}"
            )
        if self.usage_rules not in ("openai", "exact"):
            raise ValueError(f"usage_rules must be 'openai' or 'exact', got {self.usage_rules!r}")
        for name in (
            "onednn_cache_capacity",
            "host_cache_bytes",
            "disk_cache_bytes",
            "disk_min_free_bytes",
            "min_breakpoint_tokens",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eviction_history < 0:
            raise ValueError(f"eviction_history must be >= 0, got {self.eviction_history}")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be positive, got {self.max_model_len}")
        if self.increment % self.block_size:
            raise ValueError(
                f"increment ({self.increment}) must be a multiple of block_size ({self.block_size})"
            )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of the HTTP server.

    Attributes:
        host: address to listen on. Default 127.0.0.1.
        port: TCP port. Default 8000.
        served_model_name: model id in the API; None = "smollm2-135m-instruct" for the
            bundled model, else the model folder's name.
        api_keys_file: JSON file of API key -> tenant; None accepts every request as one
            tenant ("default").
        data_dir: where stored responses (responses.sqlite3) and the usage ledger
            (ledger.sqlite3) live; None = the user's data folder
            (~/.local/share/promptcache on Linux) or $PROMPTCACHE_DATA_DIR.
        max_queue: most requests queued or running; more get HTTP 429. Default 256.
        retry_after_s: how long a 429 (queue full) tells the client to wait before it
            retries, as `Retry-After` (whole seconds, rounded up) and `retry-after-ms`;
            the official OpenAI and Anthropic SDKs wait that long. Default 1.
        enable_ledger: keep the usage ledger (one row per request). Default on.
        ledger_synchronous: SQLite's `synchronous` level of the ledger (WAL mode):
            "normal" (default) syncs the log only at checkpoints, so a power loss or OS
            crash may roll back the rows committed since the last one (a process crash or
            `kill -9` loses none); "full" syncs each commit (a batch of rows), so none is
            lost. Neither can corrupt the file.
        responses_synchronous: the same for the stored responses (responses.sqlite3):
            under "normal" a power loss may forget the responses stored since the last
            checkpoint. Default "normal".
        price_model: the price row for a served model with no row of its own (the built-in
            rows are OpenAI's list prices; `[prices."MODEL"]` in the config file adds
            rows). Default gpt-5-mini.
        anthropic_price_model: the price row of Anthropic Messages API requests
            (`/v1/messages`) to a served model with no row of its own; built-in rows:
            claude-opus-4-5, claude-sonnet-4-5, claude-haiku-4-5. Default claude-sonnet-4-5.
        admin_api_key: a key that may read every tenant's usage (None: none may).
        diagnosis_history: recent prompts remembered per tenant (in memory) to tell where a
            prompt diverged from the closest earlier one; 0 turns that part off. Default 64.
        max_request_bytes: largest request body accepted; larger ones get HTTP 413.
            Default 16 MiB.
        max_header_bytes: largest request headers (names and values together); larger
            ones get HTTP 431. Default 64 KiB.
        max_messages: most messages in one request (with a stored conversation's
            history); more get HTTP 400. Default 2048.
        max_stop_sequences: most `stop_sequences` in an Anthropic Messages request
            (OpenAI's `stop` takes at most 4, as upstream). Default 16.
        body_timeout_s: seconds a client may take to send a request's whole body; slower
            ones get HTTP 408 and the connection is closed. Default 60.
        keep_alive_timeout_s: seconds an idle keep-alive connection stays open. Default 5.
        header_timeout_s: seconds a connection may take to send a complete request head
            (request line and headers) after it connects or after its previous response;
            slower ones are closed without an answer (api/connections.py). Default 10.
        max_connections: most open client connections; one accepted beyond them is closed
            at once, before anything is read or written. Default 2048.
        request_timeout_s: seconds a request may run, queue included; longer ones are
            aborted with HTTP 504 (an error event on a stream). Default 600.
        internal_api_key: the secret a router presents to this server's worker endpoint
            (`POST /v1/promptcache/generate`, which runs pre-tokenized requests for any
            tenant); None turns that endpoint off. `serve --workers` sets a random one.
        canonical_tools: render tool definitions canonically (every object's keys sorted,
            a schema's `properties` kept in the order given), so the same tools sent with
            keys in another order share a cached prefix. Default on.
        replay_answers: recent answers (per tenant) whose generated token ids are kept, so
            that an answer sent back as history renders to exactly those tokens and reuses
            their cached K/V (api/replays.py); 0 keeps none. Default 4096.
        diagnostics_history: recent requests (per server) whose prompt and output are kept
            so that a later request can name one for the providers' cache diagnostics
            (`prompt_cache_options.comparison_response_id`, `diagnostics.previous_message_id`;
            ledger/compare.py); 0 keeps none. Default 1024.
        max_schema_bytes: largest JSON schema (an answer format's, or one tool's
            parameters), in bytes of its canonical JSON; larger ones get HTTP 400
            `schema_too_large` before any compile. Default 128 KiB.
        max_schema_depth: deepest nesting of a JSON schema's objects and arrays; deeper
            ones get HTTP 400 `schema_too_deep` before any compile. Default 64.
        max_tools: most tools in one request; more get HTTP 400 `too_many_tools`.
            Default 128 (OpenAI's limit).
        prewarm_file: Responses or Chat request bodies (a JSON list or JSON lines) sent as
            prewarms once the server answers `/health`, to fill the prompt cache at start
            (cli/prewarm.py; a failure is logged, the server keeps serving). None or "": none.
        prewarm_api_key: the API key those prewarms are sent with: the cache they fill is
            its tenant's. None sends no key (right when no API keys are configured).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    api_keys_file: str | None = None
    data_dir: str | None = None
    max_queue: int = 256
    retry_after_s: float = 1.0
    enable_ledger: bool = True
    ledger_synchronous: str = "normal"
    responses_synchronous: str = "normal"
    price_model: str = "gpt-5-mini"
    anthropic_price_model: str = "claude-sonnet-4-5"
    admin_api_key: str | None = None
    diagnosis_history: int = 64
    internal_api_key: str | None = None
    canonical_tools: bool = True
    replay_answers: int = 4096
    diagnostics_history: int = 1024
    max_request_bytes: int = 16 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_messages: int = 2048
    max_stop_sequences: int = 16
    body_timeout_s: float = 60.0
    keep_alive_timeout_s: int = 5
    header_timeout_s: float = 10.0
    max_connections: int = 2048
    request_timeout_s: float = 600.0
    max_schema_bytes: int = 128 * 1024
    max_schema_depth: int = 64
    max_tools: int = 128
    prewarm_file: str | None = None
    prewarm_api_key: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_schema_bytes",
            "max_schema_depth",
            "max_tools",
            "max_request_bytes",
            "max_header_bytes",
            "max_messages",
            "max_stop_sequences",
            "body_timeout_s",
            "keep_alive_timeout_s",
            "header_timeout_s",
            "max_connections",
            "request_timeout_s",
            "retry_after_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.diagnosis_history < 0:
            raise ValueError(f"diagnosis_history must be >= 0, got {self.diagnosis_history}")
        if self.max_queue <= 0:
            raise ValueError(f"max_queue must be positive, got {self.max_queue}")
        for name in ("ledger_synchronous", "responses_synchronous"):
            if getattr(self, name) not in SQLITE_SYNCHRONOUS:
                raise ValueError(
                    f"{name} must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
                    f"got {getattr(self, name)!r}"
                )


POLICIES = ("cache-aware", "round-robin", "least-loaded")


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Settings of the router in front of several workers (promptcache/router/policy.py).

    Attributes:
        policy: "cache-aware" (default: OpenAI-style prefix affinity with overflow and a
            load bound), "round-robin" or "least-loaded" (baselines).
        route_prefix_tokens: prompt tokens that, with the tenant and `prompt_cache_key`,
            make a request's routing bucket. Default 256.
        overflow_rpm: requests per bucket per window that one worker takes before the
            bucket spills to the next worker of its order. Default 15.
        overflow_window_s: the sliding window of that rate, in seconds. Default 60.
        load_abs_threshold: skip a worker whose in-flight requests exceed the least loaded
            worker's by more than this ... Default 8.
        load_rel_threshold: ... and are more than this many times them. Default 1.5.
        balance_slack: a worker owns at most ceil((1 + this) x active buckets / workers) of
            the buckets active in the window (bounded-load hashing); larger keeps more
            buckets on their rendezvous home, 0 balances exactly. Default 0.
        health_interval_s: seconds between health checks of each worker. Default 2.
        worker_timeout_s: seconds a worker may take to start answering a request (the
            whole prefill) before the router tries the next worker. Default 600.
    """

    policy: str = "cache-aware"
    route_prefix_tokens: int = 256
    overflow_rpm: int = 15
    overflow_window_s: int = 60
    load_abs_threshold: int = 8
    load_rel_threshold: float = 1.5
    balance_slack: float = 0.0
    health_interval_s: float = 2.0
    worker_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in ("route_prefix_tokens", "overflow_rpm", "overflow_window_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.balance_slack < 0:
            raise ValueError(f"balance_slack must be >= 0, got {self.balance_slack}")
        if self.load_abs_threshold < 0 or self.load_rel_threshold < 1:
            raise ValueError("load_abs_threshold must be >= 0 and load_rel_threshold >= 1")
        if self.health_interval_s <= 0 or self.worker_timeout_s <= 0:
            raise ValueError("health_interval_s and worker_timeout_s must be positive")


def default_data_dir() -> Path:
    """Where the server keeps its data when `data_dir` is unset: $PROMPTCACHE_DATA_DIR, else
    the user's data folder (~/.local/share/promptcache on Linux)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(platformdirs.user_data_dir("promptcache"))
