"""Run what is missing of the paper's comparison on one dataset, then write its tables and figures.

    python baselines/run_table.py --dataset amazon-beauty --models table3
    python baselines/run_table.py --dataset amazon-beauty --models SASRec BERT4Rec UNGER UNGER-CKA --max-epochs 2
    python baselines/run_table.py --dataset amazon-beauty --models fig8 fig9 --time-budget 1800 --device cuda
    python baselines/run_table.py --dataset amazon-beauty --models all --dry-run
    python baselines/run_table.py --dataset amazon-beauty --models all --no-run      # tables from what exists

Run it from the repository root. Every name given to --models is a column: a RecBole model (or
UNGER), configured by baselines/<name>.yaml (+ baselines/<name>.<dataset>.yaml when it exists), or
an UNGER variant, i.e. any other name with a baselines/<name>.yaml (UNGER-CKA, Concat, ...) or of the
form UNGER-L<n> (UNGER with n decoder layers, paper Fig. 6). Group names expand: table3, table5,
table6, fig6, fig8, fig9, variants, all.

For each name the script first looks in results/ for a run of that model on that dataset whose
resolved config agrees with what it would run now: the run_label, every key the yaml files and
overrides set, the training schedule (epochs, stopping_step, stage1_epochs, pretrain_epochs, ...)
and the time budget. The expected values come from the same Config that run_unger.py would build.
The newest such run is used. Otherwise (or with --rerun) it runs ``python run_unger.py`` as a
subprocess; S3Rec first runs ``baselines/s3rec_pretrain.py`` (or reuses a matching pre-training run
from saved/*/pretrain.json) and then fine-tunes with --pre_model_path. Finally it writes
docs/tables/<dataset>.md and .csv (see unger_recbole/analysis/tables.py).

Reduced runs:
  --max-epochs N   passes --epochs=N, and caps UNGER's stage1_epochs and S3Rec's pretrain_epochs at N.
  --time-budget S  gives each model about S seconds: a 1-epoch probe run (every stage capped at 1
                   epoch) measures the fixed cost F (data, semantic encoder, quantizer, test) and the
                   cost E of one epoch of every trained stage; the model then runs with an epoch cap
                   N = floor((S - probe time - F) / E), applied like --max-epochs, and the probe is
                   kept as the result when N <= 1. Both runs record time_budget_seconds=S in their
                   config, so the next invocation finds them. Early stopping may end runs sooner, and
                   a cached stage I/semantic encoder makes the probe cheaper than a fresh run: the
                   budget is an estimate, not a hard limit.
"""

import argparse
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BASELINES = REPO / "baselines"
RUN_UNGER = REPO / "run_unger.py"
PRETRAIN = BASELINES / "s3rec_pretrain.py"

TABLE3 = ["GRU4Rec", "Caser", "SASRec", "BERT4Rec", "HGN", "FDSA", "S3Rec", "UNGER"]
VARIANTS = ["UNGER-CKA", "Concat", "Semantic-only", "Collaborative-only", "UNGER-rqvae", "UNGER-random",
            "UNGER-K128", "UNGER-K512"]
GROUPS = {
    "table3": TABLE3,
    "table5": ["Semantic-only", "Collaborative-only", "Concat", "UNGER"],
    "table6": ["Concat", "UNGER-CKA", "UNGER"],
    "fig6": ["UNGER-L1", "UNGER-L2", "UNGER", "UNGER-L8"],
    "fig8": ["UNGER", "UNGER-rqvae", "UNGER-random"],
    "fig9": ["UNGER-K128", "UNGER", "UNGER-K512"],
    "variants": ["UNGER"] + VARIANTS,
    "all": TABLE3 + VARIANTS,
}
LAYERS = re.compile(r"^UNGER-L(\d+)$")
# Keys that change how a run is executed or logged, not its outcome: never compared.
NOT_COMPARED = {"show_progress", "state", "use_gpu", "gpu_id", "pre_model_path", "pretrain_seconds",
                "checkpoint_dir", "results_dir", "artifact_dir", "encoder_progress", "encoder_device",
                "quantizer_device"}
SCHEDULE_KEYS = ("epochs", "stopping_step", "stage1_epochs", "stage1_stopping_step", "pretrain_epochs",
                 "train_stage", "time_budget_seconds")
CAPPED_KEYS = ("epochs", "stage1_epochs", "pretrain_epochs")  # set by --max-epochs / --time-budget
PRETRAIN_IGNORED = {"run_label", "train_stage", "epochs", "stopping_step", "time_budget_seconds"}


def expand_models(names):
    out = []
    for name in names:
        for item in GROUPS.get(name, [name]):
            if item not in out:
                out.append(item)
    return out


def display_path(path):
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class Request:
    """One column: the model to run, its yaml files and overrides, and the config keys a result
    must agree on to be reused."""

    def __init__(self, name, dataset, model, files, overrides):
        self.name, self.dataset, self.model = name, dataset, model
        self.files, self.overrides = list(files), dict(overrides)
        self.expected = {}

    def command(self, extra=None, script=RUN_UNGER, with_model=True):
        overrides = {**self.overrides, **(extra or {})}
        cmd = [sys.executable, display_path(script)]
        if with_model:
            cmd.append(f"--model={self.model}")
        cmd.append(f"--dataset={self.dataset}")
        if self.files:
            cmd.append("--config_files=" + " ".join(display_path(f) for f in self.files))
        cmd += [f"--{key}={value}" for key, value in overrides.items()]
        return cmd


def resolve_request(name, dataset, settings):
    """The :class:`Request` for ``name`` (without the run-length caps)."""
    from unger_recbole.quick_start import resolve_model
    base, per_dataset = BASELINES / f"{name}.yaml", BASELINES / f"{name}.{dataset}.yaml"
    files = [f for f in (base, per_dataset) if f.is_file()]
    overrides = {"run_label": name}
    layers = LAYERS.match(name)
    try:
        resolve_model(name)
        model = name
    except ValueError as error:
        if layers and not files:
            files = [BASELINES / "UNGER.yaml"]
            overrides["n_decoder_layers"] = layers.group(1)
        elif not files:
            raise SystemExit(f"run_table.py: '{name}' is neither a model nor an UNGER variant with a "
                             f"baselines/{name}.yaml file. {error}") from None
        model = "UNGER"
    return Request(name, dataset, model, files, {**overrides, **settings.get(None, {}), **settings.get(model, {})})


def resolved_config(request, extra=None):
    """The config run_unger.py would build for ``request`` (plus ``extra`` overrides)."""
    from unger_recbole import quick_start as qs
    from unger_recbole.compat import build_config
    model_class = qs.resolve_model(request.model)
    files = [str(f) for f in request.files]
    overrides = {**request.overrides, **(extra or {})}
    return build_config(model_class, request.dataset, qs.property_files(request.model, request.dataset, model_class)
                        + files, {**qs.model_overrides(request.model, request.dataset, files), **overrides})


def compared_keys(request):
    import yaml
    from unger_recbole import quick_start as qs
    keys = set(request.overrides) | set(SCHEDULE_KEYS)
    for path in request.files:
        keys |= set((yaml.safe_load(Path(path).read_text()) or {}).keys())
    keys |= set(qs.model_overrides(request.model, request.dataset, [str(f) for f in request.files]))
    return keys - NOT_COMPARED


def expectation(request, extra=None, drop=()):
    """``{key: value}`` that a reusable result's config must contain."""
    from unger_recbole.quick_start import jsonable
    config = resolved_config(request, extra).final_config_dict
    return {key: jsonable(config.get(key)) for key in compared_keys(request) | set(extra or {})
            if key not in drop and key not in NOT_COMPARED}


def agrees(config, expected):
    return all(config.get(key) == value for key, value in expected.items())


def find_results(results, request, expected):
    return [r for r in results if r.get("model") == request.model and r.get("dataset") == request.dataset
            and agrees(r.get("config", {}), expected)]


def find_pretraining(request, expected, checkpoint_dir):
    """Newest S3Rec pre-training manifest (saved/*/pretrain.json) that agrees with ``expected``."""
    import json
    found = []
    for path in Path(checkpoint_dir).glob(f"S3Rec-{request.dataset}-*/pretrain.json"):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (manifest.get("dataset") == request.dataset and Path(manifest.get("checkpoint", "")).is_file()
                and agrees(manifest.get("config", {}), expected)):
            found.append(manifest)
    return max(found, key=lambda m: m.get("date", "")) if found else None


def subprocess_runner(cmd):
    """Run ``cmd``, echo its output, return (exit status, output)."""
    print("$ " + shlex.join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    return proc.wait(), "".join(lines)


def last_value(output, prefix):
    values = [line[len(prefix):].strip() for line in output.splitlines() if line.startswith(prefix)]
    return values[-1] if values else None


class Planner:
    def __init__(self, args, runner):
        self.args, self.runner = args, runner
        self.notes = {}
        self.last_pretraining = None

    def log(self, text):
        print(f"[run_table] {text}", flush=True)

    # ---- executing one run ----
    def run_results(self, request, extra):
        """Run run_unger.py; return the results dict or None (reason in self.notes)."""
        import json
        code, output = self.runner(request.command(extra))
        path = last_value(output, "results: ")
        if code != 0 or not path:
            self.notes[request.name] = f"run failed with exit status {code}"
            self.log(f"{request.name}: run failed (exit status {code})")
            return None
        result = json.loads(Path(path).read_text())
        result["_path"] = path
        return result

    def pretraining(self, request, extra):
        """A pre-training manifest for S3Rec: reused when one agrees, else run."""
        import json
        expected = expectation(request, extra, drop=PRETRAIN_IGNORED)
        checkpoint_dir = resolved_config(request, extra)["checkpoint_dir"]
        if not self.args.rerun:
            manifest = find_pretraining(request, expected, checkpoint_dir)
            if manifest:
                self.log(f"{request.name}: reusing pre-training {manifest['checkpoint']}")
                return manifest
        code, output = self.runner(request.command(extra, script=PRETRAIN, with_model=False))
        path = last_value(output, "manifest: ")
        if code != 0 or not path:
            self.notes[request.name] = f"pre-training failed with exit status {code}"
            self.log(f"{request.name}: pre-training failed (exit status {code})")
            return None
        return json.loads(Path(path).read_text())

    def execute(self, request, extra):
        """One complete run (S3Rec: pre-training + fine-tuning) with ``extra`` overrides."""
        self.last_pretraining = None
        if request.model == "S3Rec":
            manifest = self.pretraining(request, extra)
            if manifest is None:
                return None
            self.last_pretraining = manifest
            extra = {**extra, "pre_model_path": manifest["checkpoint"],
                     "pretrain_seconds": manifest["wall_seconds"]}
        return self.run_results(request, extra)

    # ---- caps ----
    def caps(self, request, n):
        """Overrides that cap every trained stage of ``request`` at ``n`` epochs."""
        config = resolved_config(request)
        extra = {"epochs": min(n, config["epochs"])}
        if request.model == "UNGER":
            extra["stage1_epochs"] = min(n, config["stage1_epochs"])
        if request.model == "S3Rec":
            extra["pretrain_epochs"] = min(n, config["pretrain_epochs"])
        return extra

    def dry_run(self, request, extra, note=""):
        if request.model == "S3Rec":
            manifest = None if self.args.rerun else find_pretraining(
                request, expectation(request, extra, drop=PRETRAIN_IGNORED), resolved_config(request, extra)["checkpoint_dir"])
            if manifest:
                extra = {**extra, "pre_model_path": manifest["checkpoint"], "pretrain_seconds": manifest["wall_seconds"]}
            else:
                print(shlex.join(request.command(extra, script=PRETRAIN, with_model=False)))
                extra = {**extra, "pre_model_path": "<checkpoint printed by s3rec_pretrain.py>",
                         "pretrain_seconds": "<its wall_seconds>"}
        print(shlex.join(request.command(extra)) + (f"    # {note}" if note else ""))

    # ---- one column ----
    def column(self, request, results):
        args = self.args
        if args.time_budget:
            return self.column_with_budget(request, results)
        extra = self.caps(request, args.max_epochs) if args.max_epochs else {}
        found = find_results(results, request, expectation(request, extra))
        if found and not args.rerun:
            self.log(f"{request.name}: using {found[-1]['_path']}")
            return found[-1]
        if args.no_run:
            self.notes[request.name] = "not run"
            return None
        if args.dry_run:
            self.dry_run(request, extra)
            return None
        self.log(f"{request.name}: running")
        return self.execute(request, extra)

    def column_with_budget(self, request, results):
        args = self.args
        budget = {"time_budget_seconds": args.time_budget}
        expected = expectation(request, budget, drop=CAPPED_KEYS)
        found = find_results(results, request, expected)
        if found and not args.rerun:
            best = max(found, key=lambda r: (r["config"].get("epochs", 0), r.get("date", "")))
            self.log(f"{request.name}: using {best['_path']} (time budget {args.time_budget:g} s)")
            return best
        if args.no_run:
            self.notes[request.name] = "not run"
            return None
        probe_caps = {**budget, **self.caps(request, 1)}
        if args.dry_run:
            self.dry_run(request, probe_caps, "probe: 1 epoch per stage")
            print(f"# then, if the probe leaves room for N > 1 epochs in {args.time_budget:g} s: the same command "
                  f"with --epochs=N (and stage1_epochs / pretrain_epochs capped at N)")
            return None
        self.log(f"{request.name}: 1-epoch probe for the time budget")
        probe = self.execute(request, probe_caps)
        if probe is None:
            return None
        n = epochs_within_budget(probe, args.time_budget, resolved_config(request)["epochs"], self.last_pretraining)
        self.log(f"{request.name}: the probe took {probe_total_seconds(probe):.0f} s; epoch cap from the budget: {n}")
        if n <= 1:
            return probe
        return self.execute(request, {**budget, **self.caps(request, n)}) or probe


def probe_total_seconds(result):
    config = result.get("config", {})
    return float(result.get("wall_seconds", 0.0)) + float(config.get("pretrain_seconds") or 0.0)


def epochs_within_budget(probe, budget, max_epochs, pretraining=None):
    """Epoch cap N for a budget of ``budget`` seconds from a probe run with every stage at 1 epoch.

    One epoch of every trained stage costs E = train + stage1 (+ the S3Rec pre-training epoch of the
    probe's ``pretraining`` manifest); the rest F (data, encoder, quantizer, test, start-up) is fixed.
    The probe itself is counted in the budget: N = floor((budget - probe time - F) / E), within
    [1, max_epochs]."""
    stages = probe.get("stage_seconds", {})
    per_epoch = float(stages.get("train", 0.0)) + float(stages.get("stage1", 0.0))
    fixed = float(probe.get("wall_seconds", 0.0)) - per_epoch
    if pretraining:
        pretrain_epoch = float(pretraining.get("stage_seconds", {}).get("pretrain", 0.0))
        per_epoch += pretrain_epoch
        fixed += float(pretraining.get("wall_seconds", 0.0)) - pretrain_epoch
    remaining = budget - probe_total_seconds(probe) - fixed
    if per_epoch <= 0:
        return max_epochs
    return int(max(1, min(max_epochs, math.floor(remaining / per_epoch))))


def parse_settings(pairs):
    """``--set key=value`` (every run) and ``--set Model:key=value`` (runs of that model only, e.g.
    ``UNGER:`` for UNGER and all its variants) -> ``{model or None: {key: value}}``."""
    settings = {None: {}}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        model, colon, key = key.rpartition(":") if ":" in key else (None, "", key)
        if not sep or not key or (colon and not model):
            raise SystemExit(f"run_table.py: --set takes key=value or Model:key=value, got '{pair}'")
        settings.setdefault(model, {})[key] = value
    return settings


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. amazon-beauty")
    parser.add_argument("--models", nargs="+", default=["table3"],
                        help=f"models / UNGER variants / groups ({', '.join(GROUPS)}); default: table3")
    parser.add_argument("--rerun", action="store_true", help="run even when a matching result exists")
    parser.add_argument("--max-epochs", type=int, help="reduced runs: cap every trained stage at N epochs")
    parser.add_argument("--time-budget", type=float, help="reduced runs: about this many seconds per model")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="cpu: --use_gpu=False; cuda: --use_gpu=True")
    parser.add_argument("--set", action="append", metavar="[MODEL:]KEY=VALUE",
                        help="extra override for every run, or with MODEL: for that model's runs only "
                             "(UNGER: covers every UNGER variant); compared when looking for existing results")
    parser.add_argument("--no-modality", action="store_true",
                        help="skip Table 4 / Fig. 5 (modality similarity and t-SNE of the UNGER run, ~1 min)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands of the missing runs, run nothing")
    parser.add_argument("--no-run", action="store_true", help="only write the tables from the results present")
    parser.add_argument("--results-dir", default="results", help="where run_unger.py writes results (default: results)")
    parser.add_argument("--out-dir", default="docs/tables", help="where the tables go (default: docs/tables)")
    return parser


def main(argv=None, runner=subprocess_runner):
    args = build_parser().parse_args(argv)
    if args.max_epochs is not None and args.max_epochs < 1:
        raise SystemExit("run_table.py: --max-epochs must be >= 1")
    if args.time_budget is not None and args.time_budget <= 0:
        raise SystemExit("run_table.py: --time-budget must be > 0")
    if args.max_epochs and args.time_budget:
        raise SystemExit("run_table.py: give --max-epochs or --time-budget, not both")
    settings = parse_settings(args.set)
    settings[None].setdefault("show_progress", "False")
    if args.device:
        settings[None]["use_gpu"] = str(args.device == "cuda")
    if args.results_dir != "results":
        settings[None]["results_dir"] = args.results_dir

    from unger_recbole.analysis import tables
    names = expand_models(args.models)
    requests = [resolve_request(name, args.dataset, settings) for name in names]
    planner = Planner(args, runner)
    chosen = {}
    for request in requests:
        results = tables.load_results(args.results_dir, args.dataset)
        chosen[request.name] = planner.column(request, results)
    if args.dry_run:
        return chosen

    variant_names = {r.name for r in requests if r.model == "UNGER" and r.name != "UNGER"}
    columns = [name for name in names if name not in variant_names] or list(tables.TABLE3_LABELS)
    written = list(tables.write_dataset_report(args.dataset, columns, chosen, tables.load_results(args.results_dir),
                                               args.out_dir, planner.notes))
    if not args.no_modality:
        written += modality_report(args.dataset, chosen, args.out_dir)
    for path in written:
        print(f"wrote {display_path(path)}")
    return chosen


def modality_report(dataset, chosen, out_dir):
    """Paper Table 4 and Fig. 5 for the chosen UNGER run: ``<dataset>-modality.md`` and
    ``<dataset>-fig5-tsne.png``. The collaborative-only embeddings come from the chosen
    Collaborative-only run (same stage-I settings, alignment off), else from the artifact cache."""
    from unger_recbole.analysis.modality import format_table
    from unger_recbole.analysis.modality import main as modality_main

    unger = chosen.get("UNGER")
    if not unger or not Path(unger.get("run_dir", ""), "semantic.npz").is_file():
        print("[run_table] Table 4 / Fig. 5: no UNGER run folder with semantic.npz among the results; skipped")
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure, markdown = out_dir / f"{dataset}-fig5-tsne.png", out_dir / f"{dataset}-modality.md"
    arguments = ["--dataset-run", unger["run_dir"], "--artifact-dir", str(unger["config"].get("artifact_dir") or
                                                                          "artifacts"), "--tsne", str(figure)]
    collaborative = chosen.get("Collaborative-only")
    if collaborative and Path(collaborative.get("run_dir", ""), "code_table.npz").is_file():
        arguments += ["--collaborative", f"{collaborative['run_dir']}/code_table.npz:integrated"]
    try:
        result = modality_main(arguments)
    except SystemExit as error:
        print(f"[run_table] Table 4 / Fig. 5 skipped: {error}")
        return []
    sources = "\n".join(f"* {role}: `{source}`" for role, source in result["sources"].items())
    markdown.write_text(
        f"# {dataset}: modality similarity (paper Table 4) and t-SNE (paper Fig. 5)\n\n"
        f"Written by `python baselines/run_table.py --dataset {dataset} ...` from the runs below "
        f"(method: docs/MODALITY.md). Relative similarity of the final item embedding to each modality:\n\n"
        f"```\n{format_table(result['rows'])}\n```\n\nEmbeddings:\n\n{sources}\n\n"
        f"![t-SNE of semantic, collaborative, Concat and integrated embeddings]({figure.name})\n")
    return [markdown, figure]


if __name__ == "__main__":
    main(sys.argv[1:])
