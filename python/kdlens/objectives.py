"""The KD objectives: one torch-free table every layer reads (configs, planner, stats, loss options).

Each :class:`Objective` has its ``name`` (the config value), the integer ``kernel_id`` the loss
implementations dispatch on (the Triton kernels' ``tl.constexpr`` id), the paper's method name where
the paper ran it (``SeqKD``, ``RevKD``, ``GKD``), whether the paper's temperature ablation sweeps
its temperature (GKD's JSD was run at T = 1 only), and which extra parameter it takes: ``beta``
(JSD's mixture weight) or ``mix`` (the skew objectives' mixture weight, called alpha in DistiLLM;
the option is ``KDOptions.alpha``). Adding an objective is one row here plus its formula in
kdlens.losses.reference and the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    name: str
    kernel_id: int
    paper_name: str | None = None
    temperature_ablation: bool = True
    extra_parameter: str | None = None  # "beta" (jsd) or "mix" (skew objectives: KDOptions.alpha)
    aliases: tuple[str, ...] = ()


OBJECTIVE_TABLE: tuple[Objective, ...] = (
    Objective("forward_kl", 0, paper_name="SeqKD"),
    Objective("reverse_kl", 1, paper_name="RevKD"),
    Objective("jsd", 2, paper_name="GKD", temperature_ablation=False, extra_parameter="beta",
              aliases=("gkd",)),
    Objective("tvd", 3),
    Objective("skew_forward_kl", 4, extra_parameter="mix"),
    Objective("skew_reverse_kl", 5, extra_parameter="mix"),
    Objective("symmetric_kl", 6),
)

OBJECTIVES: dict[str, Objective] = {o.name: o for o in OBJECTIVE_TABLE}
OBJECTIVE_NAMES: tuple[str, ...] = tuple(OBJECTIVES)
KERNEL_IDS: dict[str, int] = {o.name: o.kernel_id for o in OBJECTIVE_TABLE}
PAPER_NAMES: dict[str, str] = {o.name: o.paper_name for o in OBJECTIVE_TABLE if o.paper_name}
TEMPERATURE_ABLATION: tuple[str, ...] = tuple(o.name for o in OBJECTIVE_TABLE if o.temperature_ablation)
ALIASES: tuple[str, ...] = tuple(a for o in OBJECTIVE_TABLE for a in o.aliases)


def paper_name(objective: str) -> str:
    """The paper's method name of an objective (SeqKD/RevKD/GKD), else the objective itself."""
    return PAPER_NAMES.get(objective, objective)
