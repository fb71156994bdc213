"""Stage 6: publish the release checkpoint, its model card and (optionally) the curated data to the Hugging Face Hub.

distill push pipelines/r1-distill-qwen-7b.yaml --repo your-org/R1-Distill-Qwen-7B-repro [--dry-run]
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from distill.artifacts import (
    MANIFEST,
    atomic_write_text,
    finish_manifest,
    manifest_hash,
    prepare_stage,
    read_manifest,
    start_manifest,
)
from distill.config import Recipe, config_hash, run_phases_of, stepped_lr
from distill.errors import DistillError
from distill.models import display_name
from distill.release import PUBLISHED_SCORES, THINK
from distill.report import decontamination_lines, render_table
from distill.students import get_student

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROVENANCE_STAGES = ["generate", "curate", "train", "patch", "eval"]


def _check_repo(repo: str | None, what: str) -> str:
    if not repo:
        raise DistillError(f"{what} is not set: give --repo org/name or set it in the recipe")
    if not REPO_ID.match(repo):
        raise DistillError(f"{what} '{repo}': expected a Hub repo id 'org/name'")
    return repo


def provenance(run: Path) -> dict[str, dict[str, Any]]:
    """Finished stages' manifests (never secrets: manifests hold hashes, counts and versions only)."""
    out = {}
    for stage in PROVENANCE_STAGES:
        # a recipe with phases: each phase's folder, in order (the last one is train/)
        folders = [f for _, f in run_phases_of(run)] if stage == "train" else []
        for folder in folders or [stage]:
            m = read_manifest(run / folder)
            if m is not None:
                out[folder] = {**m.__dict__, "manifest_hash": manifest_hash(run / folder)}
    return out


def read_eval(run: Path) -> dict[str, Any] | None:
    """run_dir/eval/results.json of the finished eval stage (its manifest is written after it), or None."""
    path = run / "eval" / "results.json"
    if read_manifest(run / "eval") is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DistillError(f"{path}: not valid JSON ({err})") from None


# ---------------------------------------------------------------------------------------------------------
# Model card


def eval_table(results: dict[str, Any] | None, release: str, model_name: str) -> str:
    """eval's table.md (report.render_table) with this model's row, the base before distillation when eval
    scored it, and DeepSeek's reported numbers for the release; then eval's held-out verdict when it has one."""
    benches = (results or {}).get("benchmarks") or {}
    if not benches:
        return "Not evaluated yet (run `distill eval`)."
    rows = [(f"{model_name} (this model)", benches)]
    base = results.get("baseline")
    if base:
        rows.append((f"{display_name(base['model'])} (before distillation)", base["benchmarks"]))
    reported = reported_results(release, benches)
    if reported:
        rows.append((f"{release} (reported)", reported))
    verdict = (results.get("verdict") or {}).get("line")
    return render_table(rows) + (f"\n{verdict}\n" if verdict else "")


def reported_results(release: str, benchmarks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """DeepSeek's numbers for the benchmarks we ran, as results (fractions; cons@64 where reported)."""
    published = PUBLISHED_SCORES.get(release, {})
    out: dict[str, dict[str, Any]] = {}
    for (name, metric), value in published.items():
        if name in benchmarks and metric == "pass@1":
            cons = published.get((name, "cons@k"))
            out[name] = {"pass@1": value / 100} | (
                {"cons@k": cons / 100, "k": 64} if cons is not None else {}
            )
    return out


def _kv_table(rows: dict[str, Any], head: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in rows.items()]
    return "\n".join(lines)


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def _data_section(recipe: Recipe, prov: dict[str, dict[str, Any]]) -> str:
    gen, cur = prov.get("generate"), prov.get("curate")
    sources = ", ".join(f"{p.source}" + (f" ({p.split})" if p.split else "") for p in recipe.generate.prompts)
    out = [f"- Prompts: {sources}"]
    if gen:
        out.append(f"- Generated: {gen['rows_in']} prompts -> {gen['rows_out']} traces")
    if cur:
        kept, seen = cur["rows_out"], cur["rows_in"] or 0
        share = f" ({100 * kept / seen:.1f}% kept)" if seen else ""
        out.append(f"- Curated: {seen} traces -> {kept} kept{share}")
        if cur["dropped"]:
            yields = {
                r: f"{n} ({100 * n / seen:.1f}%)" if seen else n for r, n in sorted(cur["dropped"].items())
            }
            out += [
                "",
                "Filter yields (traces dropped per reason):",
                "",
                _kv_table(yields, ("reason", "dropped")),
            ]
        dc = recipe.curate.decontaminate
        out += ["", f"Decontamination: {dc.ngram}-gram overlap against {', '.join(dc.benchmarks)}.", ""]
        out += decontamination_lines(cur["metrics"])
    return "\n".join(out)


def _training_section(prov: dict[str, dict[str, Any]]) -> str:
    """Train's effective config and run facts, as its manifest recorded them (what the run used)."""
    train = prov.get("train")
    if not train:
        return "Not trained yet (run `distill train`)."
    phases = [(k, m) for k, m in prov.items() if k.startswith("train-")] + [("train", train)]
    rows = {"training phases": " → ".join(_phase_label(k, m) for k, m in phases)} if len(phases) > 1 else {}
    rows |= _hyper_parameters(train.get("config")) | _objective_rows(train.get("config"), train["metrics"])
    rows |= {f"run: {k}": v for k, v in _scalars(train["metrics"]).items()}
    rows["run: wall time (s)"] = train["seconds"]
    rows["software"] = ", ".join(f"{k} {v}" for k, v in sorted(train["versions"].items()))
    return _kv_table(rows, ("hyper-parameter", "value"))


def _phase_label(folder: str, m: dict[str, Any]) -> str:
    """A phase as the card lists it: its folder, objective, steps and lr (its manifest's config)."""
    cfg = m.get("config") or {}
    lr = _lr_text(cfg) if cfg.get("lr") is not None else None
    return f"{folder} ({cfg.get('objective', 'sft')}, {m['metrics'].get('steps', '?')} steps, lr {lr})"


def _lr_text(cfg: dict[str, Any]) -> str:
    """The peak lr a train run stepped with; for on_policy also how it came from train.lr."""
    lr = stepped_lr(cfg)
    if lr == cfg["lr"]:
        return str(lr)
    return f"{lr:g} (train.lr {cfg['lr']:g} x on_policy.lr_scale {cfg['on_policy']['lr_scale']:g})"


def _objective_rows(cfg: dict[str, Any] | None, metrics: dict[str, Any]) -> dict[str, Any]:
    """train.objective and, for logit objectives, teacher, K, α, τ, D and both vocabulary hashes (train's manifest)."""
    objective = (cfg or {}).get("objective") or metrics.get("objective") or "sft"
    if objective == "sft":
        return {}
    teacher = metrics.get("teacher") or (cfg or {}).get("teacher")
    rows: dict[str, Any] = {"objective": objective, "teacher": teacher}
    if objective == "kd":
        kd = (cfg or {}).get("kd") or {}
        divergence = kd.get("divergence", metrics.get("kd_divergence"))
        rows["loss"] = "α·CE + (1 − α)·τ²·D(teacher top-K ‖ student) on assistant tokens"
        rows |= {"K (teacher top-K)": metrics.get("kd_k"), "α": kd.get("alpha"), "τ": kd.get("temperature")}
        rows["D"] = f"jsd (β={kd.get('beta')})" if divergence == "jsd" else f"{divergence} KL"
    else:
        op = (cfg or {}).get("on_policy") or {}
        rows["loss"] = "per-token reverse KL to the teacher on the student's own samples (D = reverse KL)"
        rows["samples"] = f"{op.get('prompts_per_step')} prompts x {op.get('samples_per_prompt')} per step"
        rows["SFT mix"] = op.get("sft_mix")
    rows["teacher vocabulary hash"] = metrics.get("teacher_vocab")
    rows["student vocabulary hash"] = metrics.get("student_vocab")
    return rows


def _hyper_parameters(cfg: dict[str, Any] | None) -> dict[str, Any]:
    if cfg is None:  # a train manifest from before train recorded its config
        return {"hyper-parameters": "not recorded in train's manifest"}
    lora = cfg.get("lora")
    return {
        "learning rate": _lr_text(cfg),
        "epochs": cfg["epochs"],
        "max steps": cfg.get("max_steps") or "-",
        "max length (tokens)": cfg["max_length"],
        "packing": cfg["packing"],
        "schedule": f"{cfg['lr_scheduler']}, warmup {cfg['warmup_ratio']:.0%}",
        "weight decay": cfg["weight_decay"],
        "LoRA": f"r={lora['r']}" if lora else "no (full fine-tune)",
        "loss": "on assistant tokens only",
    }


def _provenance_section(prov: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| stage | config hash | manifest hash | rows in | rows out | seconds | git |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, m in prov.items():
        lines.append(
            f"| {stage} | {m['config_hash']} | {m['manifest_hash']} | {m['rows_in']} | {m['rows_out']} "
            f"| {m['seconds']} | {(m.get('git_sha') or '-')[:10]} |"
        )
    return "\n".join(lines)


USAGE = r"""Follow DeepSeek's usage recommendations for R1 models:

- temperature 0.5-0.7 (0.6 recommended) and top-p 0.95 (the defaults in `generation_config.json`);
- no system prompt: put every instruction in the user turn;
- for math, add "Please reason step by step, and put your final answer within \boxed{}." to the prompt;
- the chat template starts the answer with `@PREFILL@` so that the model always reasons first;
- report pass@1 averaged over several samples at temperature 0.6, not greedy decoding.

```bash
vllm serve REPO --max-model-len 32768 --reasoning-parser deepseek_r1
```

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("REPO")
model = AutoModelForCausalLM.from_pretrained("REPO", dtype="auto", device_map="auto")
prompt = "What is 7 * 8? Please reason step by step, and put your final answer within \\boxed{}."
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                              return_tensors="pt").to(model.device)
out = model.generate(ids, max_new_tokens=4096, do_sample=True, temperature=0.6, top_p=0.95)
print(tok.decode(out[0][ids.shape[1]:]))
```""".replace("@PREFILL@", THINK + r"\n")  # the R1 tag from the release spec


def _card_datasets(recipe: Recipe, dataset_repo: str | None) -> list[str]:
    """The pushed traces first, then the Hub ids of the prompt sources (registry names resolved)."""
    from distill.data import SOURCES

    ids = [dataset_repo] if dataset_repo else []
    for p in recipe.generate.prompts:
        hub_id = SOURCES[p.source].hub_id if p.source in SOURCES else p.source
        if REPO_ID.match(hub_id) and hub_id not in ids:
            ids.append(hub_id)
    return ids


def model_card(
    recipe: Recipe,
    repo: str,
    prov: dict[str, dict[str, Any]],
    results: dict[str, Any] | None,
    dataset_repo: str | None,
) -> str:
    student = get_student(recipe.student)
    front = {
        "base_model": student.base if "/" in student.base else _embedded_hub_id(student.base),
        "license": recipe.push.license,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "datasets": _card_datasets(recipe, dataset_repo),
        "tags": ["distill", "reasoning", "r1-distill", "deepseek-r1", student.family],
    }
    g, te = recipe.generate, recipe.teacher
    sampling = (
        f"temperature {g.temperature}, top-p {g.top_p}, n={g.n} samples per prompt, up to {g.max_tokens} "
        f"new tokens, seed {g.seed}" + (f", `{THINK}\\n` prefilled" if g.force_think else "")
    )
    conformance = prov.get("patch", {}).get("metrics", {})
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---",
        f"# {repo.split('/')[-1]}",
        f"A reproduction of [{student.release}](https://huggingface.co/{student.release}): "
        f"[{front['base_model']}](https://huggingface.co/{front['base_model']}) fine-tuned on reasoning traces "
        f"of {te.model}, made with `distill` (recipe `{recipe.name}`). The checkpoint uses the exact R1-Distill "
        f"tokenizer and configs"
        + (f" ({conformance['facts_ok']} release facts checked)." if "facts_ok" in conformance else "."),
        "## How it was made",
        f"- Teacher: `{te.model}` ({te.backend} backend{', thinking' if te.thinking else ''})\n"
        f"- Sampling: {sampling}",
        _data_section(recipe, prov),
        "### Training",
        _training_section(prov),
        "## Evaluation",
        eval_table(results, student.release, repo.split("/")[-1]),
        "## Usage",
        USAGE.replace("REPO", repo),
        "## Provenance",
        "Stage manifests of the run (config hashes pin every setting; see `distill show`):",
        _provenance_section(prov),
    ]
    return "\n\n".join(parts) + "\n"


def _embedded_hub_id(name: str) -> str:
    from distill.models import EMBEDDED

    return EMBEDDED[name].hub_id if name in EMBEDDED else name


def dataset_files(run: Path) -> list[tuple[Path, str]]:
    kept = sorted((run / "curate" / "kept").glob("part-*.parquet"))
    if not kept:
        raise DistillError(f"{run}/curate/kept: no curated shards to push (run `distill curate` first)")
    return [(p, f"data/{p.name}") for p in kept]


def data_card(run: Path, recipe: Recipe) -> str:
    card = run / "curate" / "card.md"
    if card.exists():
        return card.read_text(encoding="utf-8")
    front = {
        "license": recipe.push.license,
        "task_categories": ["text-generation"],
        "tags": ["distill", "reasoning"],
    }
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n# {recipe.name} traces\n\n"
        f"Curated reasoning traces from `{recipe.teacher.model}`, made with distill.\n"
    )


# ---------------------------------------------------------------------------------------------------------
# Upload


def _plan(
    release: Path, run: Path, recipe: Recipe, dataset_repo: str | None
) -> dict[str, list[tuple[Path, str]]]:
    if not release.is_dir() or not (release / "config.json").exists():
        raise DistillError(f"{release}: no release checkpoint (run `distill patch` first)")
    plan = {recipe.push.repo: [(p, p.name) for p in sorted(release.iterdir()) if p.is_file()]}
    if dataset_repo:
        plan[dataset_repo] = dataset_files(run)
    return plan


def _print_plan(
    plan: dict[str, list[tuple[Path, str]]], cards: dict[str, Path], revision: str, card: bool
) -> None:
    """The files each repo would get; the cards themselves too when `card` (a pipeline run names them)."""
    from rich.console import Console

    from distill.ui import print_table, short_path

    for repo, files in plan.items():
        rows = [
            {"path_in_repo": name, "MB": f"{p.stat().st_size / 1e6:,.1f}", "from": short_path(p)}
            for p, name in files + [(cards[repo], "README.md")]
        ]
        print_table(f"push --dry-run {repo}@{revision}: nothing is uploaded", rows)
    for repo, path in cards.items():
        if card:
            Console().rule(f"{repo}: README.md")
            Console(markup=False, highlight=False, soft_wrap=True).print(path.read_text(encoding="utf-8"))
        else:
            print(f"{repo}: card in {short_path(path)}")


def _token() -> str:
    """The Hub token from HF_TOKEN or the HF cache; never printed, logged or written anywhere."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_token

    if constants.is_offline_mode():
        raise DistillError("HF_HUB_OFFLINE is set: cannot reach the Hub (unset it, or use --dry-run)")
    token = get_token()
    if not token:
        raise DistillError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)"
        )
    return token


def _upload(api, repo: str, repo_type: str, files: list[tuple[Path, str]], card: Path, recipe: Recipe):
    """One commit per repo (files + README.md), so a failed push never leaves a half-updated repo."""
    from huggingface_hub import CommitOperationAdd

    cfg = recipe.push
    api.create_repo(repo, repo_type=repo_type, private=cfg.private, exist_ok=True)
    if cfg.revision and cfg.revision != "main":
        api.create_branch(repo, repo_type=repo_type, branch=cfg.revision, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(p)) for p, name in files]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card)))
    return api.create_commit(
        repo,
        ops,
        repo_type=repo_type,
        revision=cfg.revision,
        commit_message=f"distill: {recipe.name} ({len(files)} files)",
    )


def push_stage(
    recipe: Recipe, src: Path, out: Path, force: bool = False, dry_run: bool = False, print_card: bool = True
):
    """src = the run dir. Uploads src/patch/release + model card (+ curated data with its card when
    push.push_dataset). Writes out/model_card.md and, after a real push, out/manifest.json (repo ids, commits)."""
    from huggingface_hub import HfApi

    run, out, cfg = Path(src), Path(out), recipe.push
    repo = _check_repo(cfg.repo, "push.repo")
    dataset_repo = (
        _check_repo(cfg.dataset_repo or f"{repo}-data", "push.dataset_repo") if cfg.push_dataset else None
    )
    plan = _plan(run / "patch" / "release", run, recipe, dataset_repo)
    inputs = {
        stage: manifest_hash(run / stage)
        for stage in ("patch", "eval", "curate")
        if (run / stage / MANIFEST).exists()
    }
    if "patch" not in inputs:
        raise DistillError(f"{run}/patch: no {MANIFEST} (the patch stage has not finished)")
    cfg_hash = config_hash(cfg)
    manifest = (
        start_manifest("push", cfg_hash, inputs)
        if dry_run
        else prepare_stage("push", out, cfg_hash, inputs, force)
    )
    if manifest is None:
        return read_manifest(out)
    cards = {repo: out / "model_card.md"}
    atomic_write_text(cards[repo], model_card(recipe, repo, provenance(run), read_eval(run), dataset_repo))
    if dataset_repo:
        cards[dataset_repo] = out / "dataset_card.md"
        atomic_write_text(cards[dataset_repo], data_card(run, recipe))
    if dry_run:
        _print_plan(plan, cards, cfg.revision or "main", print_card)
        manifest.metrics = {"dry_run": True, "files": sum(len(f) + 1 for f in plan.values())}
        return manifest
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=_token())
    commits = {}
    for target, files in plan.items():
        kind = "dataset" if target == dataset_repo else "model"
        info = _upload(api, target, kind, files, cards[target], recipe)
        commits[target] = {"type": kind, "commit": info.oid, "url": info.commit_url, "files": len(files) + 1}
    manifest.outputs = [{"file": name, "repo": target} for target, files in plan.items() for _, name in files]
    manifest.rows_out = len(manifest.outputs)
    manifest.metrics = {
        "repo": repo,
        "revision": cfg.revision or "main",
        "private": cfg.private,
        "dataset_repo": dataset_repo,
        "commits": commits,
    }
    return finish_manifest(out, manifest)
