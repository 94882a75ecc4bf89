"""The rules of DOMAIN.md §3 as pure functions of (a customer's events, as_of, settings).

No I/O here: the query layer (projections.pointintime) reads events and calls these.
One module per concern: ``window`` (order and windows), ``facts`` (what counts at T, and P),
``stage``, ``status``, ``level``, ``scores``, ``psych`` (trust, commitment, involvement),
``rfm`` (population quintiles), ``answer`` (all of it, with reasons) and ``changes``
(when the state next changes with no new event).
"""

from projections.rules.answer import Answer, evaluate
from projections.rules.changes import next_change
from projections.rules.facts import Facts
from projections.rules.verdict import Verdict

__all__ = ["Answer", "Facts", "Verdict", "evaluate", "next_change"]
