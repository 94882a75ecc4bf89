"""The demo: record a sample through the public API, then say what the store now holds.

The sample is recorded in a few batches in load order, exactly as a user's loads would
arrive, so backfilled events really reach the store after later ones and referral
conversions happen in both recording orders. The summary is read back from the store's
notification log, not from the sample, so it shows what was stored, not what was meant.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from journey.api import Journey
from journey.events import CustomerEvent
from journey.sample import sample

DEMO_SEED = 2025
#: The example lines printed, in this order: each tells one part of the story.
EXAMPLES = (
    "referral",
    "referral_converted",
    "backfilled purchase",
    "partial refund",
    "resolution",
    "left",
)


@dataclass
class DemoSummary:
    """What one demo run stored."""

    inputs: int = 0
    batches: int = 0
    stored: int = 0
    derived: int = 0
    duplicates: int = 0
    customers: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    backfilled: int = 0
    full_refunds: int = 0
    partial_refunds: int = 0
    resolved_satisfied: int = 0
    resolved_unsatisfied: int = 0
    examples: dict[str, CustomerEvent] = field(default_factory=dict)
    #: The customer with the most events this run recorded: one worth showing.
    busiest: str | None = None

    @property
    def conversions(self) -> int:
        return self.by_type["referral_converted"]

    @property
    def open_complaints(self) -> int:
        resolved = self.resolved_satisfied + self.resolved_unsatisfied
        return self.by_type["complaint"] - resolved


def run_demo(
    engine: Journey,
    customers: int = 300,
    seed: int = DEMO_SEED,
    batches: int = 4,
    reference: datetime | None = None,
) -> DemoSummary:
    """Record ``customers`` sample histories ending at ``reference`` (default: today)."""
    reference = reference or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    records = list(sample(customers, seed=seed, reference=reference))
    summary = DemoSummary(inputs=len(records), batches=batches)
    start = engine.app.max_notification_id()
    size = -(-len(records) // batches)
    for first in range(0, len(records), size):
        outcome = engine.record_many(records[first : first + size])
        if outcome.rejected:
            raise RuntimeError(f"the sample was rejected: {outcome.rejected[0].as_dict()}")
        summary.stored += outcome.stored
        summary.derived += outcome.derived
        summary.duplicates += outcome.duplicates
    _tally(summary, stored_events(engine, after=start))
    return summary


def stored_events(engine: Journey, after: int = 0) -> list[CustomerEvent]:
    """Every customer event in the store's global order after a notification id."""
    return list(engine.app.all_customer_events(after))


def _tally(summary: DemoSummary, events: list[CustomerEvent]) -> None:
    latest: dict[str, datetime] = {}
    paid: dict[tuple[str, str], Decimal] = {}
    per_customer: Counter[str] = Counter()
    for event in events:
        summary.by_type[event.TYPE] += 1
        per_customer[event.customer_id] += 1
        seen = latest.get(event.customer_id)
        if seen is not None and event.occurred_at < seen:
            summary.backfilled += 1
            if event.TYPE in ("purchase", "contact"):
                summary.examples.setdefault(f"backfilled {event.TYPE}", event)
        latest[event.customer_id] = max(seen or event.occurred_at, event.occurred_at)
        payload = event.payload()
        if event.TYPE == "purchase":
            paid[event.customer_id, payload["order_id"]] = payload["amount"]
        elif event.TYPE == "refund":
            full = payload["amount"] == paid.get((event.customer_id, payload["order_id"]))
            summary.full_refunds += full
            summary.partial_refunds += not full
            summary.examples.setdefault("full refund" if full else "partial refund", event)
        elif event.TYPE == "complaint_resolved":
            happy = payload["satisfied"]
            summary.resolved_satisfied += happy
            summary.resolved_unsatisfied += not happy
            summary.examples.setdefault("resolution", event)
        elif event.TYPE in ("referral", "referral_converted", "left"):
            summary.examples.setdefault(event.TYPE, event)
    summary.customers = len(latest)
    summary.busiest = per_customer.most_common(1)[0][0] if per_customer else None


def print_demo_summary(summary: DemoSummary, console: Console) -> None:
    """Print what the demo stored: counts by type, then the stories behind a few events."""
    console.print(
        f"Recorded {summary.inputs} sample events in {summary.batches} batches: "
        f"[bold]{summary.stored}[/bold] events stored for [bold]{summary.customers}[/bold] "
        f"customers ({summary.derived} derived by the engine, {summary.duplicates} duplicates)."
    )
    table = Table("event type", "stored", box=None, pad_edge=False)
    for type_, count in summary.by_type.most_common():
        table.add_row(type_, str(count))
    console.print(table)
    console.print(
        f"Backfilled (recorded after a later event of the same customer): {summary.backfilled}\n"
        f"Referral conversions recorded by the engine: {summary.conversions}\n"
        f"Refunds: {summary.full_refunds} full, {summary.partial_refunds} partial\n"
        f"Complaints: {summary.by_type['complaint']} "
        f"({summary.resolved_satisfied} resolved to satisfaction, "
        f"{summary.resolved_unsatisfied} not, {summary.open_complaints} open)"
    )
    for label in EXAMPLES:
        if label in summary.examples:
            console.print(f"  [dim]{label:>19}[/dim]  {describe(summary.examples[label])}")


def describe(event: CustomerEvent) -> str:
    """One line for one stored event: who, what, when it happened and when it was recorded."""
    fields = [f"{k}={v}" for k, v in event.payload().items() if v is not None]
    return (
        " ".join([event.customer_id, event.TYPE, ", ".join(fields)]).rstrip()
        + f" · occurred {event.occurred_at:%Y-%m-%d}, recorded {event.recorded_at:%Y-%m-%d}"
    )
