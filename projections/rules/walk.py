"""Stage, status and level by value only, for a history walked event by event.

The timeline asks for the three classifications after every event and at each moment
between events where one might change by itself. Asked through ``Facts`` and the rules,
every ask regroups the prefix and words every rule's reasons, which the timeline does not
keep: three to five times the cost of decoding the event. ``Walk`` keeps what the three
rules read, updated as each event is added, and answers their values from it.

It is a second implementation of stage.py, status.py, level.py (values only) and of
changes.threshold_moments: tests/test_rules_walk.py checks it against them after every
event and at every candidate moment, and tests/test_rows_equivalence.py checks the
timeline it builds against the history replay. A rule that changes there must change here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from journey.events import (
    BenefitGranted,
    Contacted,
    CustomerEvent,
    Disqualified,
    Identified,
    Left,
    ManagerAssigned,
    Purchased,
    Qualified,
    ReferralConverted,
    Refunded,
    Reidentified,
)
from projections.rules.level import FOLLOW_UPS
from projections.rules.status import at_risk_limit_of, at_risk_moment
from projections.rules.window import JUST_AFTER, utc
from projections.settings import Settings

State = tuple[str, str, str]
Key = tuple[datetime, int]


def count_within(times: list[datetime], start: datetime, end: datetime) -> int:
    """How many of the sorted ``times`` lie in (``start``, ``end``]."""
    return bisect_right(times, end) - bisect_right(times, start)


class Walk:
    """A customer's history so far (events added in DOMAIN order), as the classification
    rules see it at any moment from the last event's on."""

    def __init__(self, settings: Settings):
        self.settings = s = settings
        # The windows and ages the rules compare against, as durations, asked once.
        self.advocate_window = s.days("advocate_referral_days")
        self.client_tenure = s.days("client_min_tenure_days")
        self.client_window = s.days("client_recent_days")
        self.lapsed_after = s.days("lapsed_after_days")
        self.meeting_window = s.days("partnership_meeting_days")
        self.proactive_window = s.days("proactive_days")
        self.accountable_window = s.days("accountable_days")
        self.follow_up_reach = s.days("accountable_follow_up_days")
        self.reactive_window = s.days("reactive_days")
        self.purchases: list[Purchased] = []
        self.refunded: dict[str, Decimal] = defaultdict(Decimal)
        self.sales: list[Purchased] = []  # P: the purchases not fully refunded
        self.sale_times: list[datetime] = []
        self.categories: set[str] = set()  # of the sales of P
        self.at_risk_limit: timedelta | None = None
        self.threshold_moments: list[datetime] = []
        self.converted: list[datetime] = []  # referrals converted
        self.meetings: list[datetime] = []
        self.offers: list[datetime] = []  # outbound offers
        self.offer_months: list[tuple[int, int]] = []  # each offer's calendar month (UTC)
        self.reactive: list[datetime] = []  # inbound inquiries and support contacts
        # level.accountable: each purchase's first later follow-up decides, once it comes.
        self.unfollowed: list[Purchased] = []  # purchases no follow-up has come after yet
        self.followed: set[int] = set()  # purchases followed up within reach (versions)
        self.followed_times: list[datetime] = []  # when the sales of P among them happened
        self.manager = False
        self.structural = False
        self.qualified = False
        self.inquiry = False
        self.referred = False
        self.disqualified = False  # the latest qualified/disqualified event disqualifies
        self.last_left: Key | None = None

    # -- adding events ---------------------------------------------------------------

    def add(self, event: CustomerEvent) -> bool:
        """Count ``event`` (no earlier in DOMAIN order than those added before); False when
        it is of no concern to the three rules, so nothing they answer can have changed."""
        kind = type(event)
        if kind is Purchased:
            self.purchases.append(event)
            self.unfollowed.append(event)
            if event.amount - self.refunded[event.order_id] > 0:  # in P (facts.sales)
                self._add_sale(event)
        elif kind is Refunded:
            self.refunded[event.order_id] += event.amount
            self._count_sales()
        elif kind is Contacted:
            return self._add_contact(event)
        elif kind is ReferralConverted:
            self.converted.append(event.occurred_at)
        elif kind is Qualified or kind is Disqualified:
            self.qualified = self.qualified or kind is Qualified
            self.disqualified = kind is Disqualified
        elif kind is Identified or kind is Reidentified:
            if not event.referred_by:
                return False
            self.referred = True
        elif kind is ManagerAssigned:
            self.manager = True
        elif kind is BenefitGranted:
            if event.kind != "structural":
                return False
            self.structural = True
        elif kind is Left:
            self.last_left = (event.occurred_at, event.originator_version)
        else:
            return False
        return True

    def _add_contact(self, contact: Contacted) -> bool:
        direction, purpose, at = contact.direction, contact.purpose, contact.occurred_at
        concerns = False
        if purpose == "meeting":
            self.meetings.append(at)
            concerns = True
        if direction == "outbound":
            if purpose == "offer":
                self.offers.append(at)
                self.offer_months.append((utc(at).year, utc(at).month))
                concerns = True
            elif purpose in FOLLOW_UPS:
                self._follow_up(at)
                concerns = True
        elif direction == "inbound" and purpose in ("inquiry", "support"):
            self.reactive.append(at)
            self.inquiry = self.inquiry or purpose == "inquiry"
            concerns = True
        return concerns

    def _follow_up(self, at: datetime) -> None:
        """A follow-up comes after every purchase added so far (events come in DOMAIN
        order): the first for those still without one."""
        reach = self.follow_up_reach
        soon = (p for p in self.unfollowed if at - p.occurred_at <= reach)
        self.followed.update(p.originator_version for p in soon)
        self.unfollowed = []
        self._count_followed()

    def _count_followed(self) -> None:
        done = self.followed
        self.followed_times = [p.occurred_at for p in self.sales if p.originator_version in done]

    def _add_sale(self, purchase: Purchased) -> None:
        """A sale joins P, last in DOMAIN order. No follow-up has come after it yet."""
        self.sales.append(purchase)
        self.sale_times.append(purchase.occurred_at)
        if purchase.category is not None:
            self.categories.add(purchase.category)
        self._derive_from_sales()

    def _count_sales(self) -> None:
        """P again after a refund (facts.sales: a refund may come before its purchase in
        valid time), and what the rules derive from it."""
        refunded = self.refunded
        self.sales = sales = [p for p in self.purchases if p.amount - refunded[p.order_id] > 0]
        self.sale_times = [sale.occurred_at for sale in sales]
        self.categories = {sale.category for sale in sales if sale.category is not None}
        self._count_followed()
        self._derive_from_sales()

    def _derive_from_sales(self) -> None:
        sales = self.sales
        span = sales[-1].occurred_at - sales[0].occurred_at if sales else timedelta(0)
        # Shared with status.py and changes.py, not reimplemented: the exact rule.
        self.at_risk_limit = at_risk_limit_of(self.settings, len(sales), span)
        self.threshold_moments = self._thresholds()

    # -- asking ----------------------------------------------------------------------

    def state(self, at: datetime) -> State:
        """(stage, status, level) at ``at``, no earlier than the last event added."""
        return self.stage(at), self.status(at), self.level(at)

    def stage(self, at: datetime) -> str:
        s, n = self.settings, len(self.sales)
        if n:
            if self._client(at):
                start = at - self.advocate_window
                return "advocate" if count_within(self.converted, start, at) else "client"
            return "repeat" if n >= s.repeat_min_purchases else "first_time"
        if self.disqualified:
            return "disqualified"
        if self.qualified or self.inquiry or self.referred:
            return "prospect"
        return "suspect"

    def _client(self, at: datetime) -> bool:
        s = self.settings
        return (
            len(self.sales) >= s.client_min_purchases
            and at - self.sale_times[0] >= self.client_tenure
            and len(self.categories) >= s.client_min_categories
            and count_within(self.sale_times, at - self.client_window, at)
            >= s.client_min_recent_purchases
        )

    def status(self, at: datetime) -> str:
        sales = self.sales
        if self.last_left is not None and not (
            sales and (sales[-1].occurred_at, sales[-1].originator_version) > self.last_left
        ):
            return "left"
        if not sales:
            return "active"
        since = at - sales[-1].occurred_at
        if since > self.lapsed_after:
            return "lapsed"
        if self.at_risk_limit is not None and since > self.at_risk_limit:
            return "at_risk"
        return "active"

    def level(self, at: datetime) -> str:
        if not self.sales:
            return "none"
        if (
            self.manager
            and self.structural
            and count_within(self.meetings, at - self.meeting_window, at)
        ):
            return "partnership"
        if self._proactive(at):
            return "proactive"
        if self._accountable(at):
            return "accountable"
        if count_within(self.reactive, at - self.reactive_window, at):
            return "reactive"
        return "basic"

    def _proactive(self, at: datetime) -> bool:
        offers, needed = self.offers, self.settings.proactive_min_months
        first, last = bisect_right(offers, at - self.proactive_window), bisect_right(offers, at)
        if last - first < needed:  # fewer offers than months needed
            return False
        return len(set(self.offer_months[first:last])) >= needed

    def _accountable(self, at: datetime) -> bool:
        """level.accountable: a sale in the window whose first later follow-up came
        within reach."""
        return count_within(self.followed_times, at - self.accountable_window, at) > 0

    def thresholds(self) -> list[datetime]:
        """changes.threshold_moments of the history so far."""
        return self.threshold_moments

    def _thresholds(self) -> list[datetime]:
        if not self.sales:
            return []
        first, last = self.sale_times[0], self.sale_times[-1]
        moments = [first + self.client_tenure, last + self.lapsed_after + JUST_AFTER]
        turns = at_risk_moment(self.settings, len(self.sales), first, last)
        if turns is not None:
            moments.append(turns)
        return moments
