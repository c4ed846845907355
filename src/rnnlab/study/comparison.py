"""A comparison as ``rnnlab compare`` runs it, from settings to report folder.

    c = plan_comparison("compare.toml", {"steps": 500}, {"entries": "rnn,lstm,gru", "seeds": 5})
    res, paths = run_comparison(c)                 # res as rnnlab.study.compare.compare's; paths["html"]

``plan_comparison`` reads the training keys and the [compare] table of a TOML file under the flags given, and checks
everything before any entry trains: the settings, the entries and the cell options that apply to them, the
threshold's metric against the task, the report folder, and that Ray is installed for the Ray runner.
``run_comparison`` trains the entries (``rnnlab.study.compare.compare``), repeats them over seeds -- on the serial or
pool runner there, on the Ray runner as a sweep of ``rnnlab.scale.sweep`` in the report's ``seeds/`` folder --
and writes the report.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from rnnlab.errors import ConfigError
from rnnlab.training.config import TrainConfig

# the compare table's settings that are not training keys (compare_settings's flags)
SETTINGS = ("entries", "match", "params", "seeds", "workers", "runner", "threshold", "forget_bias_ablation", "report")
# what compare sets itself: a training key of these is refused, with the reason
NOT_FOR_COMPARE = (("out", "compare writes its report to --report and keeps no run folders"),
                   ("model", "compare trains the cells of --models"))


@dataclasses.dataclass
class Comparison:
    """A checked comparison: the training configuration the entries share, the settings of ``COMPARE_KEYS``
    (``settings["report"]`` the report folder), the entries as (label, cell, overrides) and the seeds' runner."""
    cfg: TrainConfig
    settings: dict
    entries: list
    runner: str

    @property
    def report(self) -> Path:
        return Path(self.settings["report"])

    @property
    def seeds_dir(self) -> Path:
        """The Ray runner's sweep folder (its trials)."""
        return self.report / "seeds"


def plan_comparison(config=None, overrides: dict | None = None, settings: dict | None = None,
                    force: bool = False) -> Comparison:
    """``config``: a TOML file (training keys at the top, compare's own in [compare]); ``overrides``: training keys
    that win over the file's (the flags of ``rnnlab compare``); ``settings``: compare's own (``SETTINGS`` and
    ``diagnostics``) over the file's [compare] table, None meaning not given. ``force``: write the report among
    files rnnlab did not write. Raises ``ConfigError`` naming the setting for anything that would fail later."""
    from rnnlab.data.outputs import check_report_dir
    from rnnlab.study.compare import check_entries, check_runner, compare_settings
    from rnnlab.training.config import flag, read_toml, resolve
    over = dict(overrides or {})
    for key, why in NOT_FOR_COMPARE:
        if key in over:
            raise ConfigError(f"{key}: {why}; drop --{key}")
    file = read_toml(config) if config else {}
    st = compare_settings(file.get("compare", {}), settings)
    if st["diagnostics"] is not None and "diagnose_every" not in over:     # the flag wins, as for train
        if "diagnose_every" in file:
            raise ConfigError(f"{config}: compare.diagnostics and diagnose_every both set the steps between "
                              f"diagnostics records; give one of them")
        over["diagnose_every"] = st["diagnostics"]
    cfg = resolve(config, over, one_model=False, table="compare")
    check_report_dir(st["report"], "--report", force)
    runner = check_runner(st["runner"], st["seeds"], st["workers"])
    specs = check_entries(st["entries"], cfg)
    cells = {cell for _, cell, _ in specs} | ({"lstm"} if st["forget_bias_ablation"] else set())
    shown = ",".join(label for label, _, _ in specs)
    for key, owners in cfg.set_options():           # applied to the entries of its cells; with none, ignored: refuse
        if not set(owners) & cells:
            raise ConfigError(f"{key}: an option of the {' and '.join(owners)} entries, and --models {shown} has "
                              f"none; drop {flag(key)} or add a {owners[0]} entry")
    if st["threshold"] is not None and st["threshold"][0] is not None:    # its metric against the task, first
        from rnnlab.study.compare import resolve_threshold
        from rnnlab.tasks import build_task
        resolve_threshold(build_task(cfg), st["threshold"])
    if runner == "ray":
        from rnnlab.scale.sweep import _tune
        _tune()                                     # Ray installed? told before any entry trains
    return Comparison(cfg, st, specs, runner)


def run_comparison(c: Comparison, on_model=None, on_compared=None) -> tuple[dict, dict]:
    """Train the entries of ``c`` and write its report; returns (the numbers, the report's paths).

    The numbers are ``compare``'s, with ``seeds`` (the summary over seeds, its ``table`` as text) when
    ``settings["seeds"]`` > 1. ``on_model(label, entry)``: called as each entry finishes (progress);
    ``on_compared(res)``: called once the entries have trained, before the runs over seeds on the Ray runner. The
    Ray runner's ``seeds/`` folder is replaced: the report folder is rewritten on every comparison."""
    from rnnlab.scale import sweep
    from rnnlab.study.compare import compare, write_compare_report
    st, cfg = c.settings, c.cfg
    res = compare(cfg, st["entries"], st["match"], st["params"], st["forget_bias_ablation"], st["threshold"],
                  progress=not cfg.quiet, on_model=on_model, seeds=st["seeds"], runner=c.runner,
                  workers=st["workers"])
    if on_compared is not None:
        on_compared(res)
    if c.runner == "ray":                           # every entry again over seeds, on the sweep runner
        res["seeds"] = ray_seeds(c, res)
    if st["seeds"] > 1:
        res["seeds"]["table"] = sweep.table(res["seeds"])
    return res, write_compare_report(res, st["report"])


def ray_seeds(c: Comparison, res: dict) -> dict:
    """The entries of ``res`` (with their matched hidden sizes) over ``c``'s seeds as a Ray Tune sweep in
    ``c.seeds_dir`` (a sweep left there by an earlier comparison is removed first); the sweep's summary."""
    from rnnlab.scale import sweep
    entries = [(label, dict(e["config"])) for label, e in res["models"].items()]
    manifest = sweep.manifest_for(c.cfg, entries, c.settings["seeds"], res["threshold"]["metric"],
                                  res["threshold"]["value"])
    if (c.seeds_dir / sweep.MANIFEST).exists():
        import shutil
        shutil.rmtree(c.seeds_dir)
    summary = sweep.run(out=str(c.seeds_dir), manifest=manifest, workers=c.settings["workers"])
    summary["runner"] = "ray"
    return summary
