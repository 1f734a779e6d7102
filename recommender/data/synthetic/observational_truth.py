"""Planted truth of the held-out episodes: posterior expectations and reference policies.

For a held-out episode with observables ``x`` and therapy ``t`` (``k`` its class, ``b`` its
severity slope, ``f`` its :func:`~.observational_model.fixed_index`, ``h`` its harm probability):

* ``observables``: ``E[P(success) | x]`` integrates ``u ~ N(m(sex, birth_year), sd^2 I)`` and
  ``s ~ N(rho s_obs, 1 - rho^2)`` in closed form (probit link):
  ``(1 - h) Phi((f + W_k.m - b rho s_obs) / sqrt(1 + b^2 (1 - rho^2) + sd^2 |W_k|^2))``.
* ``bound``: the same expectation under the posterior of ``u`` given the patient's logged
  outcomes, by adaptive Gauss-Hermite quadrature: a tensor grid on the prior, then twice a grid
  on the posterior mean and covariance of the previous grid, with importance weights
  ``prior x likelihood / proposal`` (the grids before the last use a cheap approximate
  likelihood; only the last one, whose weights are exact, enters the result). Each logged
  episode contributes ``int prod_tries P(label | u, s, therapy) N(s; rho s_obs, 1 - rho^2) ds``:
  closed form for a single informative try, Gauss-Hermite over ``s`` otherwise, times the
  first-line choice probability when ``unobserved_confounding`` makes it depend on ``s``.
  Adverse events, the episodes' conditions and labs, and the clinicians' choices carry no
  information on ``u`` (they depend on observables only), so they drop out. Cold-start
  patients have no history: their bound is the observables expectation.
* ``oracle``: the true ``P(success)`` given ``u`` and ``s``.

Warm patients are processed ``chunk_size`` at a time so that memory stays bounded. Against a
brute-force grid the bound is accurate to about 1e-4 (``tests/data/synthetic``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import log_ndtr, ndtr

from .observational_model import (
    Observables,
    PlantedModel,
    first_line_propensity,
    fixed_index,
    guideline_choice,
    harm_probability,
    success_probability,
    u_mean,
)
from .observational_sim import ADVERSE, Episodes, Patients

SEVERITY_NODES = 8  # Gauss-Hermite nodes over the severity of an episode with several tries
ADAPTIVE_STAGES = 3  # grids on the prior, then re-centred on the posterior (twice)
COARSE_NODES = 5  # nodes per dimension of u on the grids before the last
COARSE_SEVERITY_NODES = 0  # there, tries count as independent (a cheap proposal, not the truth)
FLOOR_SD = 0.05  # proposal covariance = posterior covariance of the last grid + 0.05^2 I


@dataclass(frozen=True)
class HeldOutTruth:
    """Truth of the H held-out episodes, each (H, T) unless stated otherwise."""

    episode: np.ndarray  # (H,) index into the episodes
    p_success: np.ndarray
    p_harm: np.ndarray
    observables: np.ndarray  # E[P(success) | observables]
    bound: np.ndarray  # E[P(success) | observables, logged outcomes]
    propensity: np.ndarray  # the clinicians' first-line probabilities
    choices: dict[str, np.ndarray]  # policy name -> (H,) therapy index


def gauss_hermite(nodes_per_dim: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Hermite rule for N(0, I_dim): nodes (J, dim) and log weights (J,)."""
    x, w = hermegauss(nodes_per_dim)
    w = w / w.sum()
    grids = np.meshgrid(*[np.arange(nodes_per_dim)] * dim, indexing="ij")
    index = np.stack([g.ravel() for g in grids], axis=1)
    return x[index], np.log(w[index]).sum(axis=1)


def held_out_truth(
    model: PlantedModel,
    patients: Patients,
    episodes: Episodes,
    tries: dict[str, np.ndarray],
    propensity: np.ndarray,
    *,
    step_first_line: float,
    unobserved_confounding: float,
    nodes_per_dim: int,
    chunk_size: int,
) -> HeldOutTruth:
    """Truth of every held-out episode; the bound is computed ``chunk_size`` patients at a time."""
    held = np.flatnonzero(episodes.held_out)
    obs = episodes.obs.take(held)
    patient = episodes.patient[held]
    p_success, p_harm = success_probability(
        model, obs, patients.u[patient], episodes.severity[held]
    )
    observables = _observables_expectation(model, obs, patients, patient)
    bound = observables.copy()
    warm = np.flatnonzero(~patients.cold[patient])  # one held-out episode per patient
    history = _History(model, episodes, tries, step_first_line, unobserved_confounding)
    for first in range(0, len(warm), chunk_size):
        rows = warm[first : first + chunk_size]
        owners = patient[rows]
        nodes, weights = posterior_nodes(
            model, patients, owners, history.chunk(owners), nodes_per_dim
        )
        bound[rows] = _bound_expectation(model, obs.take(rows), nodes, weights)
    choices = {
        "guideline": guideline_choice(model, obs),
        "observables": _best(observables, obs.blocked),
        "bound": _best(bound, obs.blocked),
        "oracle": _best(p_success, obs.blocked),
    }
    return HeldOutTruth(held, p_success, p_harm, observables, bound, propensity[held], choices)


def logged_truth(
    model: PlantedModel,
    patients: Patients,
    episodes: Episodes,
    tries: dict[str, np.ndarray],
    propensity: np.ndarray,
) -> dict[str, np.ndarray]:
    """Truth of the L logged episodes' first-line decisions: ``episode`` (L,), ``p_success``,
    ``p_harm``, ``propensity``, ``chosen`` (L, T), and ``first_line`` (E,): the therapy each
    episode's clinician chose first (hidden for held-out episodes; -1 if none was allowed)."""
    first_line = np.full(len(episodes.patient), -1)
    first = tries["line"] == 0
    first_line[tries["episode"][first]] = tries["therapy"][first]
    episode = np.flatnonzero(~episodes.held_out)
    u, severity = patients.u[episodes.patient[episode]], episodes.severity[episode]
    p_success, p_harm = success_probability(model, episodes.obs.take(episode), u, severity)
    chosen = first_line[episode][:, None] == np.arange(model.role.shape[1])
    return {
        "episode": episode,
        "p_success": p_success,
        "p_harm": p_harm,
        "chosen": chosen,
        "propensity": propensity[episode],
        "first_line": first_line,
    }


def posterior_nodes(
    model: PlantedModel,
    patients: Patients,
    owners: np.ndarray,
    history: _ChunkHistory,
    nodes_per_dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (P, J, D) and normalised weights (P, J) of P(u | demographics, logged outcomes).

    ``owners`` are sorted distinct patient indices. ``sum_j weights[p, j] f(nodes[p, j])``
    approximates the posterior expectation of ``f(u)`` for patient ``owners[p]``.
    """
    prior = u_mean(model, patients.sex[owners], patients.birth_year[owners])
    sd, dim = model.u_sd, prior.shape[1]
    mean, chol = prior, np.broadcast_to(sd * np.eye(dim), (len(owners), dim, dim))
    schedule = [COARSE_NODES] * (ADAPTIVE_STAGES - 1) + [nodes_per_dim]
    quadrature = [COARSE_SEVERITY_NODES] * (ADAPTIVE_STAGES - 1) + [SEVERITY_NODES]
    for stage, n_nodes in enumerate(schedule):
        z, log_w = gauss_hermite(n_nodes, dim)
        nodes = mean[:, None, :] + z @ np.swapaxes(chol, 1, 2)
        log_post = log_w + history(nodes, quadrature[stage]) + 0.5 * (z**2).sum(axis=1)
        log_post -= 0.5 * ((nodes - prior[:, None, :]) ** 2).sum(axis=2) / sd**2
        log_post -= log_post.max(axis=1, keepdims=True)
        weights = np.exp(log_post)
        weights /= weights.sum(axis=1, keepdims=True)
        if stage + 1 < len(schedule):
            mean = (weights[:, None, :] @ nodes)[:, 0]
            dev = nodes - mean[:, None, :]
            cov = np.swapaxes(dev * weights[:, :, None], 1, 2) @ dev
            chol = np.linalg.cholesky(cov + FLOOR_SD**2 * np.eye(dim))
    return nodes, weights


def _best(values: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    return np.argmax(np.where(blocked, -np.inf, values), axis=1)


def _index_parts(
    model: PlantedModel, obs: Observables
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E, T) response index without the trait term and with ``s`` at ``rho s_obs``, the
    severity slope, and the index scale once ``s`` is integrated: sqrt(1 + b^2 (1 - rho^2))."""
    slope = model.severity_slope[obs.condition]
    rho = model.reliability
    mean = fixed_index(model, obs) - slope * rho * obs.s_obs[:, None]
    return mean, slope, np.sqrt(1 + slope**2 * (1 - rho**2))


def _observables_expectation(
    model: PlantedModel, obs: Observables, patients: Patients, patient: np.ndarray
) -> np.ndarray:
    mean, _, scale = _index_parts(model, obs)
    prior = u_mean(model, patients.sex[patient], patients.birth_year[patient])
    mechanism = model.mechanism[obs.condition]
    mean = mean + np.take_along_axis(prior @ model.weights.T, mechanism, axis=1)
    norm = np.linalg.norm(model.weights, axis=1)[mechanism]
    spread = np.sqrt(scale**2 + (model.u_sd * norm) ** 2)
    return ndtr(mean / spread) * (1 - harm_probability(model, obs))


def _bound_expectation(
    model: PlantedModel, obs: Observables, nodes: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(H, T) E[P(success)] under posterior ``weights`` (H, J) on ``nodes`` (H, J, D)."""
    mean, _, scale = _index_parts(model, obs)
    trait = model.weights[model.mechanism[obs.condition]] @ np.swapaxes(nodes, 1, 2)  # (H, T, J)
    expected = (ndtr((mean[:, :, None] + trait) / scale[:, :, None]) @ weights[:, :, None])[..., 0]
    return expected * (1 - harm_probability(model, obs))


def _add_rows(out: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``out[index[i]] += values[i]`` for a sorted ``index``."""
    if len(index):
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        out[index[starts]] += np.add.reduceat(values, starts, axis=0)


class _History:
    """The logged outcomes that inform ``u``: tries without an adverse event."""

    def __init__(
        self,
        model: PlantedModel,
        episodes: Episodes,
        tries: dict[str, np.ndarray],
        step_first_line: float,
        unobserved_confounding: float,
    ):
        logged = ~episodes.held_out[tries["episode"]]
        informative = logged & (tries["label"] != ADVERSE)  # an adverse event says nothing on u
        self.episode = tries["episode"][informative]
        self.therapy = tries["therapy"][informative]
        self.success = tries["success"][informative]
        self.patient = episodes.patient[self.episode]
        first = logged & (tries["line"] == 0)
        self.chosen = np.zeros(len(episodes.patient), dtype=np.int64)
        self.chosen[tries["episode"][first]] = tries["therapy"][first]
        self.model, self.episodes = model, episodes
        self.step_first_line, self.confounding = step_first_line, unobserved_confounding

    def chunk(self, owners: np.ndarray) -> _ChunkHistory:
        """The informative tries of the sorted distinct patients ``owners``."""
        lo, hi = np.searchsorted(self.patient, [owners[0], owners[-1] + 1])
        local = np.minimum(np.searchsorted(owners, self.patient[lo:hi]), len(owners) - 1)
        keep = lo + np.flatnonzero(owners[local] == self.patient[lo:hi])
        return _ChunkHistory(self, len(owners), keep, local[keep - lo])


class _ChunkHistory:
    """log P(logged outcomes | u) of a chunk of P patients, as a function of trait nodes."""

    def __init__(self, history: _History, n_owners: int, keep: np.ndarray, local: np.ndarray):
        model = history.model
        self.history, self.n_owners, self.local = history, n_owners, local
        episode, therapy = history.episode[keep], history.therapy[keep]
        self.unique, where, counts = np.unique(episode, return_inverse=True, return_counts=True)
        self.obs = history.episodes.obs.take(self.unique)
        mean, slope, scale = _index_parts(model, self.obs)
        self.base = mean[where, therapy]  # (R,) index without the trait term
        self.slope, self.scale = slope[where, therapy], scale[where, therapy]
        self.direction = model.weights[model.mechanism[self.obs.condition][where, therapy]]
        self.sign = np.where(history.success[keep], 1.0, -1.0)
        self.where = where
        self.several = (counts[where] > 1) | (history.confounding != 0)  # needs the quadrature

    def __call__(self, nodes: np.ndarray, severity_nodes: int) -> np.ndarray:
        """(P, J) log-likelihood at ``nodes`` (P, J, D), up to a constant per patient.

        ``severity_nodes`` Gauss-Hermite nodes integrate the shared severity of an episode with
        several informative tries; 0 approximates (each try integrates its own severity in
        closed form, as if independent: a cheap proposal, not the truth).
        """
        log_lik = np.zeros(nodes.shape[:2])
        if not len(self.local):
            return log_lik
        index = self.base[:, None] + (nodes[self.local] @ self.direction[:, :, None])[..., 0]
        single = ~self.several if severity_nodes else np.ones(len(index), dtype=bool)
        rows = np.flatnonzero(single)
        scaled = (self.sign / self.scale)[rows, None] * index[rows]
        _add_rows(log_lik, self.local[rows], log_ndtr(scaled))
        rows = np.flatnonzero(~single)
        if len(rows):
            values, group = self._quadrature(rows, index[rows], severity_nodes)
            owner = self.local[rows][np.r_[True, self.where[rows][1:] != self.where[rows][:-1]]]
            _add_rows(log_lik, owner, values)
        return log_lik

    def _quadrature(
        self, rows: np.ndarray, index: np.ndarray, severity_nodes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Log of the severity integral per episode, (E', J), and the episodes (indices into
        ``self.obs``), for the tries ``rows`` (sorted by episode) with trait-node indices
        ``index`` (R', J) at the mean severity."""
        history = self.history
        x, w = hermegauss(severity_nodes)
        sd = np.sqrt(1 - history.model.reliability**2)
        shift = (self.slope[rows, None, None] * sd * x).astype(np.float32)
        values = index.astype(np.float32)[:, :, None] - shift
        prob = ndtr(np.where(self.sign[rows, None, None] > 0, values, -values))  # (R', J, Q)
        where = self.where[rows]
        starts = np.flatnonzero(np.r_[True, where[1:] != where[:-1]])
        ends = np.r_[starts[1:], len(where)]
        product = prob[starts]  # (E', J, Q): at most MAX_TRIES tries per episode
        for slot in range(1, int((ends - starts).max())):
            longer = np.flatnonzero(ends - starts > slot)
            product[longer] *= prob[starts[longer] + slot]
        group = where[starts]
        weights = np.broadcast_to(w / w.sum(), (len(group), len(x)))
        if history.confounding:
            shift_q = np.broadcast_to(history.confounding * x, weights.shape)
            choice = first_line_propensity(
                history.model, self.obs.take(group), history.step_first_line, shift_q
            )  # (E', Q, T)
            chosen = history.chosen[self.unique[group]]
            weights = weights * choice[np.arange(len(group)), :, chosen]
        return np.log((product @ weights[:, :, None].astype(np.float32))[..., 0]), group
