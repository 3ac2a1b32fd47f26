"""The rate-aware mode: size for a target drain time from arrival and service rates.

From two successive readings of one queue (``t0``, ``t1``):

- throughput ``x = Δprocessed / Δt`` (acked messages per second),
- arrival rate ``λ = max(0, Δbacklog / Δt + x)`` (what came in = what grew + what left),
- per-replica service rate ``μ = x / replicas serving``. The replicas serving are the
  live consumers when the reading knows them (a pod still starting serves nothing:
  dividing by the requested count underestimates μ and over-provisions). While the queue
  was non-empty at both ends every replica was busy and ``x / replicas`` *is* μ (EWMA);
  otherwise it is only a lower bound, which may raise the estimate, never lower it — so
  an early underestimate does not stick once the extra replicas have emptied the queue.

Both are smoothed (EWMA, ``ALPHA``). With ``T`` the target drain time, the replicas
needed to keep up with arrivals and clear the backlog within ``T`` are
``ceil(λ/μ + backlog/(μ·T))``. Until μ is known the caller falls back to the
messages-per-replica rule.
"""

from __future__ import annotations

import math

from autoscaler.policy.state import RateEstimate, Reading

ALPHA = 0.5  # weight of the newest sample: reacts within ~2 polls, smooths single spikes


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else ALPHA * sample + (1.0 - ALPHA) * old


def update_rate(
    previous: RateEstimate | None, reading: Reading, replicas: int, now: float
) -> RateEstimate | None:
    """Fold one reading into the estimate; a reading without counters keeps the old one."""
    if reading.backlog is None or reading.processed_total is None:
        return previous
    serving = reading.consumers if reading.consumers is not None else replicas
    fresh = RateEstimate(now, reading.backlog, reading.processed_total, serving)
    if previous is None or now <= previous.at:
        return fresh if previous is None else previous
    if reading.processed_total < previous.processed_total:  # counter reset: start over
        return fresh
    dt = now - previous.at
    throughput = (reading.processed_total - previous.processed_total) / dt
    arrivals = max(0.0, (reading.backlog - previous.backlog) / dt + throughput)
    service = previous.service_rate
    workers = min(previous.replicas, serving) or max(previous.replicas, serving)
    if workers > 0 and throughput > 0:
        sample = throughput / workers
        if previous.backlog > 0 and reading.backlog > 0:  # saturated: the rate itself
            service = _ewma(service, sample)
        elif service is None or sample > service:  # idle slots: a lower bound
            service = sample
    return RateEstimate(
        now,
        reading.backlog,
        reading.processed_total,
        serving,
        arrival_rate=_ewma(previous.arrival_rate, arrivals),
        service_rate=service,
    )


def rate_proposal(
    estimate: RateEstimate | None, reading: Reading, target_drain_time_s: float
) -> tuple[int, str] | None:
    """Replicas for the target drain time, or None while the rates are unknown."""
    if estimate is None or estimate.service_rate is None or estimate.arrival_rate is None:
        return None
    if estimate.service_rate <= 0 or reading.backlog is None:
        return None
    mu, lam = estimate.service_rate, estimate.arrival_rate
    need = lam / mu + reading.backlog / (mu * target_drain_time_s)
    wanted = math.ceil(need - 1e-9)
    message = (
        f"rate-aware: λ {lam:.3g}/s, μ {mu:.3g}/s per replica, backlog {reading.backlog:g}, "
        f"drain in {target_drain_time_s:g}s → {wanted}"
    )
    return wanted, message
