"""Coordination between the managers of one fleet, in PostgreSQL: who owns which partition
(leases with fencing tokens, balanced over the live managers) and the guardrail counts that hold
fleet-wide (reservations against a limit per window).

Shell code: it does I/O, and it judges lease expiry by the database's clock so that managers on
hosts with skewed clocks agree. Nothing here is imported by the core; a reservation reaches a
decision as a recorded input.
"""

from onduty.fleet.keeper import LeaseKeeper
from onduty.fleet.leases import Fence, Lease, Leases, fair_share, fence_sql, holds, lease_fence
from onduty.fleet.quota import Quota, QuotaConflict, QuotaReason, Reservation
from onduty.log.pg import (
    DEFAULT_SCHEMA,
    DatabaseUnavailable,
    StoreURL,
    StoreURLError,
    connect,
    parse_store_url,
    redact,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "DatabaseUnavailable",
    "Fence",
    "Lease",
    "LeaseKeeper",
    "Leases",
    "Quota",
    "QuotaConflict",
    "QuotaReason",
    "Reservation",
    "StoreURL",
    "StoreURLError",
    "connect",
    "fair_share",
    "fence_sql",
    "holds",
    "lease_fence",
    "parse_store_url",
    "redact",
]
