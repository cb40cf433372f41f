"""The typed configuration models, each the only copy of its defaults: the run config (dataset,
teacher, decode, recipe, scale, training), the quality gates, and a frozen run."""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fastdistill_assets.core.hashing import sha256_json, stable_json

ERROR_PROFILE_KEY = "error_profile"   # TeacherConfig.endpoint_overrides: the embedded teacher's profile


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ModelT = TypeVar("ModelT", bound=BaseModel)


class WithholdGold(_Strict):
    """Withhold the gold of a share of a labeled dataset's questions from the pipeline.

    Those questions take the gold-free path; their gold is kept aside (``withheld_gold_sql``)
    only so that the gold-free gates can be measured against it. The demo uses it for its
    unlabeled slice; the choice is a stable hash of each question's source_id.
    """

    share: float = Field(default=0.0, ge=0.0, le=1.0)
    splits: list[str] = Field(default_factory=lambda: ["train"])


class DatasetConfig(_Strict):
    kind: Literal["demo", "wikisql", "spider", "questions"] = "demo"
    path: str | None = None             # wikisql/spider: a folder; questions: a .jsonl, .csv or .parquet file
    databases: str | dict[str, str] | None = None  # questions: folder of <db_id>.sqlite/.db/.duckdb files, or db_id: PostgreSQL URL
    db_path: str | None = None          # questions: the database of rows that name none
    splits: list[str] = Field(default_factory=lambda: ["train", "dev", "test"], min_length=1)
    input_fields: list[str] = Field(default_factory=lambda: ["question", "db_id", "evidence"], min_length=1)
    limit_per_split: int | None = Field(default=None, ge=1)
    lower_values: bool | None = None    # wikisql: null = detect lower-cased database text; true/false overrides
    gold_empty_result: Literal["keep", "reject"] = "keep"   # a gold query that returns no rows or only NULLs
    sample_rows: int = Field(default=3, ge=0)            # rows per table shown to the teacher
    sample_rows_total: int = Field(default=30, ge=0)     # rows over all tables of a database, at most
    max_question_chars: int = Field(default=4000, ge=1)  # a longer question is rejected too_long, never sent
    db_url: str | None = None           # questions: the PostgreSQL database of rows that name none (no password in it)
    password_env: str | None = None     # the environment variable holding that password (none: PGPASSWORD, ~/.pgpass)
    schemas: list[str] = Field(default_factory=lambda: ["public"], min_length=1)  # PostgreSQL schemas shown and queried
    max_tables: int = Field(default=200, ge=1)           # PostgreSQL: tables and views shown per database, at most
    withhold_gold: WithholdGold = Field(default_factory=WithholdGold)

    @field_validator("db_url")
    @classmethod
    def _no_password_in_url(cls, url: str | None) -> str | None:
        return None if url is None else checked_postgres_url(url)

    @field_validator("databases")
    @classmethod
    def _urls_by_db_id(cls, databases: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if isinstance(databases, dict):
            return {db_id: checked_postgres_url(url) for db_id, url in databases.items()}
        return databases


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def checked_postgres_url(url: str) -> str:
    """A PostgreSQL URL a config (or a questions row) may hold: the one check of it.

    Raises:
        ValueError: not a postgresql:// URL, or one with a password in it."""
    if not url.startswith(POSTGRES_SCHEMES):
        raise ValueError(f"{url!r} must be a postgresql:// URL")
    if urlsplit(url).password is not None:
        raise ValueError("a PostgreSQL URL must not hold a password: put it in an environment variable and name "
                         "it in dataset.password_env")
    return url


def _rate(default: float) -> Any:
    return Field(default=default, ge=0.0, le=1.0)


class TeacherErrorProfile(_Strict):
    """Random mistakes of the embedded teacher, as real teachers make them (``teacher.error_profile``).

    Each field but ``seed`` is the probability that one answer gets that kind of mistake; the kinds
    are drawn independently per answer from ``seed``, the prompt and, above temperature 0, the
    request's sampling seed, so a run replays exactly. A kind that cannot apply (no condition to
    drop) leaves the answer as it is. The defaults are calibrated on the demo's train split, greedy:
    about 0.9 of the answers execute after cleaning and about half match the gold (see
    ``benchmarks/teacher_error_profile.py``); all zeros (or ``error_profile: null``) is the clean
    schema-linking baseline.
    """

    wrong_column: float = _rate(0.14)         # SELECT another existing column
    wrong_aggregate: float = _rate(0.12)      # add, change or drop the aggregate
    drop_condition: float = _rate(0.14)       # leave out one WHERE condition
    extra_condition: float = _rate(0.10)      # add a condition on a sample row's value
    perturbed_value: float = _rate(0.14)      # change a literal (a number or a string)
    hallucinated_column: float = _rate(0.06)  # name a column the table does not have: an execution error
    prose_wrap: float = _rate(0.15)           # fences and prose around the SQL (cleaning recovers it)
    seed: int = 0

    def rates(self) -> dict[str, float]:
        """The probability of each kind, in the order they are drawn and applied."""
        return {name: getattr(self, name) for name in type(self).model_fields if name != "seed"}

    @classmethod
    def clean(cls) -> TeacherErrorProfile:
        """Every rate zero: the clean baseline (what `error_profile: null` means too)."""
        return cls.model_validate(dict.fromkeys((n for n in cls.model_fields if n != "seed"), 0.0))

    @property
    def is_clean(self) -> bool:
        """No kind can happen: the teacher answers as the clean baseline."""
        return not any(self.rates().values())

    def fingerprint(self) -> str:
        """A short hash of the profile (seed included), for the response cache's endpoint identity."""
        return sha256_json(self.model_dump())[:12]


def _overrides(base_url: str | None, timeout_s: float | None, concurrency: int | None,
               profile: TeacherErrorProfile | None) -> dict[str, Any]:
    values = {"base_url": base_url, "timeout_s": timeout_s, "concurrency": concurrency}
    overrides = {key: value for key, value in values.items() if value is not None}
    return {**overrides, ERROR_PROFILE_KEY: profile.model_dump()} if profile else overrides


# The gold-free verdicts that leave a sample unsettled: what a stronger teacher is asked about.
EscalateReason = Literal["no_majority", "low_agreement", "too_few_executed", "degenerate_result",
                         "ungrounded_literal", "missing_question_number"]
ESCALATE_REASONS: tuple[str, ...] = get_args(EscalateReason)


class EscalateConfig(_Strict):
    """A stronger teacher for the gold-free samples the first one leaves unsettled (``teacher.escalate``).

    A gold-free sample with no kept answer and a candidate rejected for one of ``reasons`` is asked
    again of this provider (``num_generations`` answers, the run's decode otherwise), and its answers
    pass the same gates. With at least ``consistency.min_executed`` escalated answers they must agree
    as any sample's do; with fewer, an answer is kept when it executes, is grounded, is not
    degenerate and gives the same result as ``min_confirmations`` of the first teacher's executed
    answers (or alone, with ``trust_single``); a sample none of whose first answers executed is
    asked only where an answer can be kept without confirmation. One answer is the greedy one.
    ``calibrate``: the labeled samples the gold-free path would leave unsettled are asked too, to
    measure the escalated labels (their label stays the gold's). ``error_profile`` is for an
    embedded escalation teacher only (null: the clean baseline). ``base_url`` / ``timeout_s`` /
    ``concurrency`` override the provider's.
    """

    provider: str
    model: str | None = None
    base_url: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    num_generations: int = Field(default=1, ge=1)
    trust_single: bool = False
    min_confirmations: int = Field(default=1, ge=1)   # first-teacher answers that must give the single answer's result
    # escalate the labeled samples the gold-free gates would leave unsettled too (their label stays the
    # gold's), so the shadow calibration measures the escalated labels: costs escalation calls
    calibrate: bool = True
    reasons: list[EscalateReason] = Field(default_factory=lambda: list(get_args(EscalateReason)), min_length=1)
    error_profile: TeacherErrorProfile | None = None

    def endpoint_overrides(self) -> dict[str, Any]:
        """The gateway settings the escalation overrides, and its error profile when one applies."""
        profile = self.error_profile if self.base_url is None and self.error_profile is not None \
            and not self.error_profile.is_clean else None
        return _overrides(self.base_url, self.timeout_s, self.concurrency, profile)


class TeacherConfig(_Strict):
    """The teacher; ``base_url``, ``timeout_s`` and ``concurrency`` override the provider's gateway
    settings for this run (null: the gateway's).

    ``error_profile`` is used only by the ``embedded`` provider when the gateway starts it (no
    ``base_url``); it is ignored for every other provider and for an embedded teacher reached at a
    base URL (a server started elsewhere). Null or all zeros: the clean baseline.
    """

    provider: str = "embedded"
    model: str | None = None
    splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1)
    base_url: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    error_profile: TeacherErrorProfile | None = Field(default_factory=TeacherErrorProfile)
    escalate: EscalateConfig | None = None      # a stronger teacher for unsettled gold-free samples (off: null)
    # a hard limit on what the first teacher's answers cost, in dollars at the provider's prices (null: none);
    # not part of the config hash: `fastdistill run budget RUN USD` raises it for an existing run
    budget_usd: float | None = Field(default=None, gt=0)
    # online: a request per question as the answers are needed; batch: OpenAI's Batch API (files and batches,
    # at the provider's batch_price_factor, answers within its completion window), polled every batch_poll_s
    mode: Literal["online", "batch"] = "online"
    batch_poll_s: float = Field(default=30.0, gt=0)

    def active_error_profile(self) -> TeacherErrorProfile | None:
        """The error profile the teacher answers with: None unless the gateway starts the embedded
        teacher with a profile that is not clean."""
        profile = self.error_profile
        if self.provider != "embedded" or self.base_url is not None or profile is None or profile.is_clean:
            return None
        return profile

    def endpoint_overrides(self) -> dict[str, Any]:
        """The gateway settings this run overrides (null ones left to the gateway), and the active
        ``error_profile`` (as a plain mapping) for the embedded teacher the gateway starts."""
        return _overrides(self.base_url, self.timeout_s, self.concurrency, self.active_error_profile())


ADAPTIVE_KEYS = {"adaptive", "initial_generations", "stop_margin"}


class DecodeProfile(_Strict):
    """How answers are drawn. With ``adaptive``, a question gets ``initial_generations`` answers and
    more, round by round up to ``num_generations``, only while it is not settled (``gates.adaptive``:
    settled when the consistency gate keeps its majority now and that majority leads the runner-up by
    ``stop_margin`` answers or cannot lose it, or when no result could still become a kept majority)."""

    # several sampled answers per question: the gold-free gates need them to agree (self-consistency)
    name: str = "sampled"
    temperature: float = Field(default=0.4, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1)
    num_generations: int = Field(default=5, ge=1)   # answers per question (adaptive: the most a question gets)
    adaptive: bool = False
    initial_generations: int = Field(default=2, ge=1)
    stop_margin: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _initial_within_most(self) -> DecodeProfile:
        if self.adaptive and self.initial_generations > self.num_generations:
            raise ValueError(f"initial_generations ({self.initial_generations}) must be at most num_generations "
                             f"({self.num_generations}), the most answers a question gets")
        return self

    def key(self) -> str:
        """The decode_profile string used by the data contract and the response cache: how each
        answer is drawn, not how many are (the adaptive settings), so an adaptive run and a fixed
        one with the same ``num_generations`` share sample ids and cached answers."""
        return stable_json(self.model_dump(exclude=ADAPTIVE_KEYS))


class RecipeConfig(_Strict):
    rationale: bool = False
    multi_decode_select: bool = True   # keep the best candidate per input among num_generations
    preference_pairs: bool = False


class ScaleConfig(_Strict):
    """How a large run is processed; none of it changes a result (same rows, same verdicts)."""

    chunk_rows: int = Field(default=10_000, ge=1)        # samples per chunk of the streamed stages
    workers: int | None = Field(default=None, ge=1)      # processes for the gates and loading (null: the step's CPUs)
    shards: int = Field(default=1, ge=1, le=64)          # steps the teacher and gate stages are split into


class TrainingConfig(_Strict):
    trainer: Literal["sketch", "hf-sft"] = "sketch"
    epochs: int = Field(default=30, ge=1)
    learning_rate: float = Field(default=0.5, gt=0)          # sketch (Adagrad)
    seed: int = 0
    model_path: str | None = None       # hf-sft: local Hugging Face folder or .gguf file
    max_steps: int | None = Field(default=None, ge=1)        # hf-sft: stop after this many optimizer steps
    batch_size: int = Field(default=4, ge=1)
    lora_r: int = Field(default=8, ge=1)
    lora_learning_rate: float = Field(default=2e-4, gt=0)    # hf-sft (AdamW on the LoRA adapters)
    max_length: int = Field(default=1024, ge=16)             # hf-sft: tokens; a longer prompt drops its example
    gradient_accumulation_steps: int = Field(default=1, ge=1)  # hf-sft: micro-batches per optimizer step
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"  # hf-sft: learning rate after the warmup
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)  # hf-sft: share of the steps warming up from 0
    max_grad_norm: float = Field(default=1.0, gt=0)          # hf-sft: clip the gradients' global L2 norm
    checkpoint_steps: int = Field(default=50, ge=1)          # hf-sft: a resumable checkpoint every N steps
    generation_batch_size: int = Field(default=16, ge=1)     # eval: prompts a student answers at once (hf-sft)


class RunConfig(_Strict):
    task_id: str = "text2sql"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    decode: DecodeProfile = Field(default_factory=DecodeProfile)
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    eval_split: str | None = "test"     # null: distill and train without evaluating
    parent_run_id: str | None = None


class RuleGates(_Strict):
    min_length: int = 10
    max_length: int = 2000
    banned_tokens: list[str] = Field(default_factory=list)
    single_statement: bool = True
    require_select: bool = True


class ExecutionGates(_Strict):
    """Limits on running one query: its time, its result (stops at ``max_rows`` + 1 rows,
    ``too_many_rows``, or past ``max_result_bytes``, ``result_too_big``) and DuckDB's memory."""

    timeout_ms: int = Field(default=2000, gt=0)
    max_rows: int = Field(default=10000, ge=1)
    max_result_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    engine_memory_mb: int = Field(default=512, ge=64)  # DuckDB's memory_limit, per connection
    # A query that returns no rows: reject it, keep it (the path's gate decides as for any
    # result), or let the LLM judge decide (kept only with a judge score >= judge.min_score).
    empty_result: Literal["reject", "keep", "judge"] = "keep"


class ConsistencyGates(_Strict):
    """Self-consistency, the semantic gate for samples without gold.

    Among a sample's candidates that executed, the largest group with the same result is the
    majority and its share is the sample's ``agreement``. Candidates outside it are rejected;
    so is every candidate of a sample with fewer than ``min_executed`` executed candidates, a
    tie for the largest group, or an agreement below ``min_agreement``.
    """

    min_agreement: float = Field(default=0.6, ge=0.0, le=1.0)
    min_executed: int = Field(default=2, ge=1)
    # A majority result that is degenerate (no rows, only NULLs, or one row of only 0 / NULL) is no
    # evidence: different wrong queries agree on it by accident. reject: the sample is rejected.
    degenerate_result: Literal["reject", "keep"] = "reject"


class GroundingGates(_Strict):
    """Grounded literals: a gold-free candidate that compares a column with a string (``=``, ``!=``,
    ``IN``, ``LIKE`` without wildcards) that occurs nowhere in that column is rejected
    (``ungrounded_literal``), and one that leaves out a number its question states
    (``missing_question_number``, with ``question_numbers``). Labeled samples are decided by their
    gold; the check still runs on them for the shadow calibration (the gold-free verdict they would
    get)."""

    enabled: bool = True
    case_sensitive: bool = False
    # a number that stands alone in the question ("opening year is 1931") must be in one of the query's
    # literals; a query without it has dropped or changed a condition (missing_question_number)
    question_numbers: bool = True


class GoldGates(_Strict):
    semantics: Literal["bag", "set"] = "bag"
    float_tolerance: float = 1e-6


class JudgeGates(_Strict):
    enabled: bool = False
    provider: str | None = None
    model: str | None = None
    concurrency: int = Field(default=4, ge=1)
    min_score: float = Field(default=0.75, ge=0.0, le=1.0)   # needed by empty results when execution.empty_result is judge


class SelectGates(_Strict):
    require_gold_match: bool = True
    min_judge_score: float = 0.0


# The quality report's numeric metrics (reports.quality_report) that a check can gate.
GateMetric = Literal["p_keep", "teacher_error_rate", "empty_output_rate", "rule_pass_rate", "parse_pass_rate",
                     "exec_pass_rate", "gold_match_rate", "labeled_p_keep", "gold_free_p_keep", "agreement_p50",
                     "agreement_p90", "judge_mean", "judge_p50", "judge_p90", "gold_free_precision",
                     "gold_free_precision_lower", "gold_free_recall"]
CHECK_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class CheckThreshold(_Strict):
    """One asset check on ``filtered``: ``metric op value``. ``blocking``: a failure stops the
    downstream assets (ERROR severity); otherwise it is a warning (WARN) and they run."""

    metric: GateMetric
    op: Literal[">=", "<="]
    value: float
    blocking: bool = True


class BaselineConfig(_Strict):
    kind: Literal["ungated", "run", "fixed"] = "ungated"
    run_id: str | None = None
    value: float | None = None


class EvalGates(_Strict):
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    require_beats_baseline: bool = True
    # How the student must beat the baseline (when require_beats_baseline): "at_least" (accuracy
    # >= the baseline's, point estimates) or "significant_improvement" (more accurate, and the
    # exact McNemar test on the questions both answered gives p < alpha; needs a paired baseline).
    baseline_comparison: Literal["at_least", "significant_improvement"] = "at_least"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    # online_win_rate must be >= this: "teacher_lower_bound" (Wilson lower bound of parity with
    # the teacher), "previous_lower_bound" (the baseline run's win-rate lower bound) or a number.
    online_win_rate_threshold: Literal["teacher_lower_bound", "previous_lower_bound"] | float = "teacher_lower_bound"
    blocking: bool = True

    @model_validator(mode="after")
    def _significance_needs_paired_baseline(self) -> EvalGates:
        if self.baseline_comparison == "significant_improvement" and self.baseline.kind == "fixed":
            raise ValueError("eval.baseline_comparison: significant_improvement needs per-question baseline answers "
                             "(baseline.kind ungated or run), not a fixed value")
        return self


class GatesConfig(_Strict):
    rules: RuleGates = Field(default_factory=RuleGates)
    execution: ExecutionGates = Field(default_factory=ExecutionGates)
    gold: GoldGates = Field(default_factory=GoldGates)
    consistency: ConsistencyGates = Field(default_factory=ConsistencyGates)
    grounding: GroundingGates = Field(default_factory=GroundingGates)
    judge: JudgeGates = Field(default_factory=JudgeGates)
    select: SelectGates = Field(default_factory=SelectGates)
    checks: dict[str, CheckThreshold] = Field(default_factory=dict)
    eval: EvalGates = Field(default_factory=EvalGates)

    @field_validator("checks")
    @classmethod
    def _check_names(cls, checks: dict[str, CheckThreshold]) -> dict[str, CheckThreshold]:
        """Each entry becomes a Dagster asset check named after its key."""
        for name in checks:
            if not CHECK_NAME_PATTERN.match(name):
                raise ValueError(f"check name {name!r}: use letters, digits and '_' (a Dagster check name)")
        return checks

    @model_validator(mode="after")
    def _empty_result_judge_needs_judge(self) -> GatesConfig:
        if self.execution.empty_result == "judge" and not self.judge.enabled:
            raise ValueError("execution.empty_result: judge needs judge.enabled: true")
        return self


class FrozenRun(_Strict):
    """A run's configuration as frozen at creation."""

    run_id: str
    created_at: str
    config: RunConfig
    gates: GatesConfig
    config_hash: str
    gates_hash: str


def gold_free_notes(config: RunConfig, gates: GatesConfig) -> list[str]:
    """One-line warnings when a run that can have samples without gold is set up so that
    self-consistency cannot work (said by ``fastdistill run new``)."""
    dataset, decode = config.dataset, config.decode
    if dataset.kind != "questions" and dataset.withhold_gold.share <= 0:
        return []  # every sample has gold
    notes = []
    if decode.num_generations < gates.consistency.min_executed:
        notes.append(f"decode.num_generations {decode.num_generations} < consistency.min_executed "
                     f"{gates.consistency.min_executed}: every sample without gold will be rejected "
                     "(too_few_executed); sample several answers, e.g. num_generations: 5, temperature: 0.4")
    elif decode.temperature == 0:
        notes.append("decode.temperature 0 with several generations: a deterministic teacher gives the same "
                     "answer each time, so agreement says nothing; use a temperature > 0")
    return notes


