"""Route 53 failover settings and what they bound, Pulumi-free (the local failover proof uses them too).

Recovery time (RTO), what the numbers given here bound:
  a failure is seen by the ``failure_threshold``-th failed check in a row, at most
  ``interval x failure_threshold`` after the failure (the first failing check comes within one
  interval); resolvers and clients keep the old answer for at most the record's ``TTL``, so
  ``RTO <= interval x failure_threshold + TTL``. Not in the bound: an endpoint that hangs rather
  than refuses fails each check only after the checker's timeout (4 s to connect, 2 s to answer), and
  Route 53 aggregates checkers around the world (unhealthy once 18 % or fewer see it healthy), whose
  probes are not synchronised, with a delay AWS does not state.
Recovery point (RPO): with S3 Replication Time Control, AWS commits to 99.99 % of objects replicated
within 15 minutes, so a model published up to 15 minutes before the primary failed may be missing in
the standby; without it replication is best effort and no bound can be stated.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferstack.infra.errors import InvalidInput

# What Route 53 accepts: standard (30 s) or fast (10 s) checks, 1 to 10 failures in a row.
HEALTH_CHECK_INTERVALS_S = (10, 30)
FAILURE_THRESHOLDS = range(1, 11)
# A failover record's TTL bounds how long clients keep the failed region: above five minutes
# failover stops meaning much, below five seconds resolvers hammer Route 53 for nothing.
TTL_RANGE_S = range(5, 301)
REPLICATION_TIME_CONTROL_MINUTES = 15  # the only value S3 RTC accepts
HEALTH_PATH = "/v2/health/ready"


@dataclass(frozen=True)
class FailoverTiming:
    """Route 53 health-check settings and the record TTL, with what they imply for recovery."""

    interval_s: float
    failure_threshold: int
    ttl_s: float

    @property
    def detection_s(self) -> float:
        """The longest a failure goes unseen: ``failure_threshold`` failed checks, one interval apart."""
        return self.interval_s * self.failure_threshold

    @property
    def rto_s(self) -> float:
        """Detection plus the TTL for which clients keep the failed region's answer."""
        return self.detection_s + self.ttl_s


def check_timing(interval_s: int, failure_threshold: int, ttl_s: int) -> FailoverTiming:
    if interval_s not in HEALTH_CHECK_INTERVALS_S:
        raise InvalidInput("health_check_interval_s", interval_s, "10 or 30 (what Route 53 offers)")
    if failure_threshold not in FAILURE_THRESHOLDS:
        raise InvalidInput("failure_threshold", failure_threshold, "an integer from 1 to 10")
    if ttl_s not in TTL_RANGE_S:
        raise InvalidInput("ttl_s", ttl_s, "an integer from 5 to 300 seconds")
    return FailoverTiming(interval_s, failure_threshold, ttl_s)


def rpo_s(replication_time_control: bool) -> int | None:
    """The replication lag AWS commits to, in seconds; None where it commits to none."""
    return REPLICATION_TIME_CONTROL_MINUTES * 60 if replication_time_control else None
