"""Typed recipe: one pydantic model per stage section, loaded from YAML with `--set a.b=v` overrides."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.errors import DistillError

R1_MATH_DIRECTIVE = "Please reason step by step, and put your final answer within \\boxed{}."
R1_CODE_DIRECTIVE = (
    "Write a complete, self-contained Python solution. Put the final code in one ```python code block."
)
R1_MCQ_DIRECTIVE = (
    "Answer the following multiple choice question. Think step by step, then give the final answer as "
    "'Answer: X' where X is one of A, B, C, D."
)


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, fields are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TeacherConfig(Strict):
    model: str = "smollm2-135m"  # registry name, local path or hub id (openai backend: the served model name)
    backend: Literal["vllm", "openai"] = "vllm"
    # local: this process (or data_parallel_size replicas); ray: Ray Data's LLM batch API (distill.engines.ray_backend)
    executor: Literal["local", "ray"] = "local"
    tokenizer: str | None = None  # renders prompts; default: the model's (vllm). openai without it: chat API
    chat_template: str | None = None  # path to a .jinja that replaces the tokenizer's chat template
    thinking: bool = True  # False: a plain instruct model; the whole response is the answer
    # vllm backend (in-process engine)
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1  # independent engine replicas, each gets a slice of the shards
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    dtype: str = "auto"
    # CPU, one rank: the engine core and its worker run in this process, ~5 s to start instead of ~30 s
    # of spawning two processes that import torch and vLLM again
    in_process: bool = False
    # openai backend (vllm serve, SGLang, DeepSeek API)
    base_url: str | list[str] | None = None  # one server, or a fleet: requests go to the least busy endpoint
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this env var, never from the recipe
    concurrency: int = 64  # requests in flight per endpoint
    request_timeout_s: float = 1800.0
    max_retries: int = 8


class PromptSource(Strict):
    source: str  # data-source registry name, or a path to JSONL/Parquet, or a hub dataset id
    split: str | None = None
    limit: int | None = None
    columns: dict[str, str] = Field(default_factory=dict)  # our field -> source column
    domain: Literal["math", "code", "mcq", "general"] | None = None
    weight: float = 1.0  # mixture: share of this source's rows taken, in (0, 1] (open-r1's dataset_mixture)


class DatasetSource(Strict):
    """A public trace set read by a named adapter of distill.sources (or `columns` for any other layout)."""

    adapter: str  # openr1-math | mixture-of-thoughts | openthoughts | ... | columns
    path: str | None = None  # local JSONL/Parquet file or folder; None: the adapter's hub id
    subset: str | None = None  # hub config (mixture-of-thoughts: math | code | science | all)
    split: str = "train"
    columns: dict[str, str] = Field(default_factory=dict)  # adapter "columns": our field -> their column
    domain: Literal["math", "code", "mcq", "general"] | None = None  # overrides the adapter's
    weight: float = 1.0  # share of the set's rows taken, in (0, 1]; a stable per-row draw
    limit: int | None = None  # rows taken at most, after the weight


class GenerateConfig(Strict):
    source: Literal["teacher", "dataset"] = "teacher"  # dataset: import `datasets` instead of sampling
    datasets: list[DatasetSource] = Field(default_factory=list)
    prompts: list[PromptSource] = Field(default_factory=lambda: [PromptSource(source="gsm8k", split="train")])
    n: int = 4  # samples per prompt
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768  # new tokens per sample
    seed: int = 0
    logprobs: int = 0  # K: store the teacher's top-K log-probs per completion token (distill.logits); 0 = off
    force_think: bool = True  # prefill "<think>\n" after the chat template
    system_prompt: str | None = None  # R1: none; all instructions go in the user turn
    math_directive: str = R1_MATH_DIRECTIVE
    code_directive: str = R1_CODE_DIRECTIVE
    mcq_directive: str = R1_MCQ_DIRECTIVE
    shard_size: int = 256  # prompts per shard (the unit of resume)


class DedupConfig(Strict):
    exact: bool = True
    minhash_threshold: float | None = 0.8  # Jaccard; None disables near-dup
    num_perm: int = 128
    shingle: int = 5  # words per shingle


class DecontamConfig(Strict):
    ngram: int = Field(8, ge=2, le=256)  # words per n-gram
    benchmarks: list[str] = Field(
        default_factory=lambda: ["aime24", "aime25", "math500", "gpqa_diamond", "amc23", "humaneval", "mbpp"]
    )
    check_traces: bool = False
    max_corpus_df: float = (
        0.001  # n-grams in more than this share (and 5+) of the checked texts are boilerplate
    )


class VerifyConfig(Strict):
    math: bool = True
    code: bool = True
    mcq: bool = True
    # No \boxed{} in the answer: grade the number after its last "answer is" / "answer:" instead of calling it
    # unparseable. Off for R1 (it boxes); on for plain instruct teachers that ignore the directive (the demo).
    math_answer_phrase: bool = False
    # No \boxed{}: read the whole answer as math-verify's parse does (its last LaTeX expression or number, a closing
    # "final answer is ..." first). Off: an unboxed answer is unparseable.
    math_extract_unboxed: bool = False
    # A gold list "10, 4, -2" compares in order (hendrycks' MATH rule). Off: a list is a set, as MATH writes
    # solution lists ("Enter all such integers, separated by commas"); a tuple "(10, 4, -2)" is always in order.
    math_ordered_lists: bool = False
    # Imported trace sets (generate.source: dataset) carry their own verification (source_verified): true takes
    # it as the verdict where present; false (default) re-grades every row.
    trust_source_flags: bool = False
    timeout_s: float = 5.0  # per item
    code_timeout_s: float = 10.0
    code_memory_mb: int = 1024
    # stdin/stdout sets: "cpu" times each case's CPU seconds (a loaded machine does not time out correct
    # programs); "wall" times wall seconds, as every set's reference harness does (distill.graders.rules).
    code_clock: Literal["cpu", "wall"] = "cpu"
    workers: int = 2
    judge: TeacherConfig | None = None  # LLM judge for unparseable answers; off by default
    judge_sample: float = 0.0  # share of rule-graded rows the judge also grades, to count disagreements
    judge_max_tokens: int = 1024


class FilterConfig(Strict):
    drop_malformed: bool = True
    drop_truncated: bool = True
    drop_empty_answer: bool = True  # a closed </think> with nothing after it (R1 answers after its reasoning)
    max_foreign_script_ratio: float | None = (
        0.05  # share of words in a script other than the prompt's; None: off
    )
    max_paragraph_chars: int | None = 3000  # longest stretch without a line break; None: off
    drop_code_in_noncode: bool = True
    max_repeat_ngram_ratio: float | None = 0.3  # share of repeated `repeat_ngram`-word windows; None: off
    repeat_ngram: int = 10
    min_tokens: int = 1  # completion tokens
    max_tokens: int | None = 32768


class SelectConfig(Strict):
    policy: Literal["all_correct", "max_k", "shortest"] = "all_correct"
    k: int = 1
    keep_unverified_domains: bool = False  # keep "general" rows nobody can verify


class DifficultyConfig(Strict):
    """Pass-rate filtering (open-r1, Light-R1): `model` answers each prompt k times; keep lo <= rate <= hi."""

    model: str  # registry name | path | hub id, served by vLLM (distill.engines.backends)
    k: int = 8  # samples per prompt
    keep: tuple[float, float] = (0.0, 1.0)  # pass-rate range kept, inclusive
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 4096
    engine: TeacherConfig | None = None  # engine options; model is filled in


class CurateConfig(Strict):
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontamConfig = Field(default_factory=DecontamConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    dataset_name: str | None = None  # data card name; default: the recipe name
    difficulty: DifficultyConfig | None = None  # keep prompts a model solves at a pass rate in `keep`


class LoraConfig(Strict):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


class KDConfig(Strict):
    """train.objective: kd. loss = alpha·CE + (1 − alpha)·temperature²·D(teacher top-K ‖ student) (distill.train.kd)."""

    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the CE on the teacher's sampled ids
    temperature: float = Field(1.0, gt=0.0)
    divergence: Literal["forward", "reverse", "jsd"] = "forward"
    beta: float = Field(0.5, ge=0.0, le=1.0)  # jsd: the teacher's weight in the mixture
    # the teacher distribution D compares against: "sampled" is the one each row was drawn from (its stored
    # log-probs at the row's sampling temperature and top_p, as vLLM's processed_logprobs), the target the CE term's
    # samples estimate; "raw" is the teacher at temperature 1 (what vLLM and OpenAI servers return by default)
    target: Literal["sampled", "raw"] = "sampled"


class OnPolicyConfig(Strict):
    """train.objective: on_policy. The student samples with vLLM, the teacher scores each sampled token
    (prompt_logprobs), the per-token reverse KL log q − log p drives the update (distill.train.on_policy)."""

    teacher_url: str | None = None  # an OpenAI-compatible server (vllm serve) scores; None: in-process vLLM
    prompts_per_step: int = Field(4, ge=1)  # distinct curated prompts per optimizer step
    samples_per_prompt: int = Field(2, ge=1)
    max_tokens: int = Field(256, ge=1)  # per student sample
    temperature: float = Field(1.0, gt=0.0)  # 1: the samples come from the student's own distribution
    # weight of the SFT CE on the prompts' curated traces, added to the loss
    sft_mix: float = Field(0.0, ge=0.0)
    # a token's weight sums the reverse KL of the tokens after it in its sample, decayed by this per token: 0 (as
    # Thinking Machines) weighs each token by its own KL only, so nothing rewards ending a sample; 1 is the
    # sequence-level KL's policy gradient (MiniLLM)
    discount: float = Field(0.0, ge=0.0, le=1.0)
    # on_policy trains at lr_scale x train.lr: at the sft lr (2e-4) it broke SmolLM2 on arith:dev (pass@1 4.0 % vs
    # sft's 13.5); a quarter of it (5e-5) reached 31.5, a tenth 16.5 (bench/on_policy_dev.py, 100 problems x 2)
    lr_scale: float = Field(0.25, gt=0.0)
    engine: TeacherConfig | None = None  # vLLM options of both engines (dtype, max_model_len, eager)


class TrainConfig(Strict):
    model: str | None = (
        None  # checkpoint to fine-tune (registry name | path | hub id); None: the student's base
    )
    lr: float | None = None  # None: the student's default
    epochs: float | None = None
    max_steps: int | None = None  # overrides epochs when set
    max_length: int | None = None  # tokens per sample / packed bin; None: the student's default
    packing: bool = True
    micro_batch_size: int = 1  # packed bins (or padded samples) per device step
    global_batch: int | None = None  # samples per optimizer step; None: the student's default
    grad_accum: int | None = None  # None: derived from global_batch, micro_batch_size, bins and GPUs
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = True
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = "auto"
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    loss_chunk_tokens: int = (
        1024  # chunked CE: logits never exceed [chunk x vocab] (32k x 152k: 1/12 the memory)
    )
    overlong: Literal["truncate", "drop"] = "truncate"
    lora: LoraConfig | None = None
    save_every: int = 500  # steps
    keep_checkpoints: int = 2  # newest step-N folders kept (a 7B one with optimizer state is ~100 GB)
    log_every: int = 1  # steps between progress-bar / tensorboard updates; metrics.jsonl gets every step
    seed: int = 0
    accelerate_config: str | None = None
    tensorboard: bool = False
    objective: Literal["sft", "kd", "on_policy"] = "sft"
    # Logit objectives: the teacher (registry name | path | hub id) whose vocabulary must equal the student's and,
    # for on_policy, which scores the samples; None: the recipe's teacher.tokenizer or teacher.model
    teacher: str | None = None
    kd: KDConfig = Field(default_factory=KDConfig)
    on_policy: OnPolicyConfig = Field(default_factory=OnPolicyConfig)


OBJECTIVES = ("sft", "kd", "on_policy")


class PhaseConfig(Strict):
    """One training phase of `phases` (run in order by `distill run`): the recipe's train section with this
    phase's objective and `train` overrides, trained from `init` (an earlier phase's final/) and, for kd and
    on_policy, taught by `teacher` (an earlier phase's final/ or a model). Validated by check_phases."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")  # the stage folder is train-<name> (the last: train)
    objective: str  # sft | kd | on_policy (a str, so a typo is reported with the phase's name)
    init: str | None = None  # an earlier phase whose final/ this one trains from; None: train.model
    teacher: str | None = (
        None  # an earlier phase (its final/, release layout) or a model; None: train.teacher
    )
    train: dict[str, Any] = Field(
        default_factory=dict
    )  # overrides of the train section (lr, max_steps, kd.alpha)


class PatchConfig(Strict):
    release: bool = True  # apply the exact R1-Distill config/tokenizer changes


class BenchmarkSpec(Strict):
    k: int = Field(1, ge=1)  # samples per problem: pass@1 is averaged over k, cons@k by majority vote
    limit: int | None = Field(None, ge=1)


class EvalConfig(Strict):
    benchmarks: dict[str, BenchmarkSpec] = Field(
        default_factory=lambda: {"aime24": BenchmarkSpec(k=64), "math500": BenchmarkSpec(k=4)}
    )
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    seed: int = 0
    engine: TeacherConfig | None = None  # engine options for the student; model is filled in
    # A model scored alongside, on the same problems and sampling, with its own chat template and no <think>
    # prefill: did distillation help? "base": the model the student was trained from (train.model or its base).
    baseline: str | None = None


class PushConfig(Strict):
    repo: str | None = None
    private: bool = True
    revision: str | None = None
    push_dataset: bool = False
    dataset_repo: str | None = None
    license: str = "mit"
    dry_run: bool = False  # list files and render the card without network (the CPU demo)


class Recipe(Strict):
    name: str
    student: str = "smollm2-135m"
    run_dir: str | None = None  # default: runs/<name>
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # several training phases, in order (distill.phases); empty: the train section is the one phase, in train/
    phases: list[PhaseConfig] = Field(default_factory=list)
    patch: PatchConfig = Field(default_factory=PatchConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    push: PushConfig = Field(default_factory=PushConfig)

    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


def config_hash(section: BaseModel | Any, ensure_ascii: bool = True) -> str:
    """Stable sha256 of a config section or any JSON value (sorted JSON); the skip key of a stage.
    ensure_ascii=False hashes non-ASCII text as UTF-8 (generate's shard keys, kept so that old runs resume)."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    text = json.dumps(data, sort_keys=True, ensure_ascii=ensure_ascii)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=v` -> (["a", "b"], v) with v parsed as YAML (so 1e-5, true, [1,2] get their types)."""
    if "=" not in item:
        raise DistillError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-5")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DistillError(f"--set {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def _format_validation(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key '{loc}'"
    return f"{where}: '{loc}': {first['msg']}"


def recipe_from_dict(data: dict[str, Any], where: str = "<recipe>") -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise DistillError(_format_validation(err, where)) from None
    from distill.students import get_student  # validates the student name, names the file

    try:
        get_student(recipe.student)
    except DistillError as err:
        raise DistillError(f"{where}: {err}") from None
    check_phases(recipe, where)
    return recipe


def phase_train(recipe: Recipe, phase: PhaseConfig, where: str = "<recipe>") -> TrainConfig:
    """The train section a phase runs: the recipe's, its objective, then its overrides (nested sections merge)."""
    data = _merge(recipe.train.model_dump(mode="json"), {**phase.train, "objective": phase.objective})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise DistillError(_format_validation(err, f"{where}: phase '{phase.name}': train")) from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def stepped_lr(train: dict[str, Any]) -> float:
    """The peak lr a train run steps with, from its train section as dumped (a manifest's config): train.lr, times
    on_policy.lr_scale for on_policy (its policy gradient breaks the student at sft's lr); a manifest from before
    lr_scale existed stepped at train.lr."""
    scale = (
        (train.get("on_policy") or {}).get("lr_scale", 1.0) if train.get("objective") == "on_policy" else 1.0
    )
    return train["lr"] * scale


def phase_folders(names: list[str]) -> list[str]:
    """The stage folder of each phase, in order: train-<name>, the last one's train/ (what patch, eval, push read)."""
    return [f"train-{n}" for n in names[:-1]] + ["train"] if names else []


def run_phases_of(run_dir: Path) -> list[tuple[str, str]]:
    """(phase name, stage folder) of a run dir's phases, from its recipe.resolved.yaml; [] for one train stage."""
    resolved = Path(run_dir) / "recipe.resolved.yaml"
    data = yaml.safe_load(resolved.read_text()) if resolved.exists() else None
    names = [p["name"] for p in (data or {}).get("phases") or []]
    return list(zip(names, phase_folders(names), strict=True))


def check_phases(recipe: Recipe, where: str = "<recipe>") -> None:
    """What a phase list can get wrong before anything runs: one line naming the phase and its field."""
    names, seen = [p.name for p in recipe.phases], []
    for phase in recipe.phases:
        at = f"{where}: phase '{phase.name}'"
        if phase.name in seen:
            raise DistillError(f"{at}: name: a second phase of that name (phase names are stage folders)")
        if phase.objective not in OBJECTIVES:
            raise DistillError(
                f"{at}: objective: unknown '{phase.objective}' (one of {', '.join(OBJECTIVES)})"
            )
        for field, ref in (("init", phase.init), ("teacher", phase.teacher)):
            # init names a phase; teacher names a phase or a model (a name that is no phase)
            if ref is not None and ref not in seen and (field == "init" or ref in names):
                why = "runs after it" if ref in names else "is not a phase"
                ran = ", ".join(seen) or "none"
                raise DistillError(f"{at}: {field}: phase '{ref}' {why} (phases before it: {ran})")
        if phase.objective == "kd" and not (recipe.generate.source == "teacher" and recipe.generate.logprobs):
            raise DistillError(
                f"{at}: objective: kd reads the teacher's stored log-probs, but this recipe's generate stores "
                "none (generate.source: teacher with generate.logprobs: K > 0)"
            )
        phase_train(recipe, phase, where)
        seen.append(phase.name)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply `--set` overrides, validate. Errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise DistillError(f"{path}:{line} malformed YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise DistillError(f"{path}: a recipe must be a mapping of sections")
    data.setdefault("name", path.stem)
    return recipe_from_dict(apply_overrides(data, overrides or []), where=str(path))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
