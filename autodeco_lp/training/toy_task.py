"""A decoding task whose per-token optimum is known, to show what an objective can learn.

Every completion has `copies` "copy" positions and one "guess" position, with fixed logits over a
vocabulary of 8 tokens; the hidden state is the position type (one-hot, H = 2):

- copy: token 0 is right (logits [1, 0, ..., 0]); greedy (T -> 0) is optimal there;
- guess: the answer is a target drawn uniformly from tokens 0-3 per problem, unknown to the model;
  logits [1.5, 1, 1, 1, -1, -1, -1, -1] favour token 0.

A sample is correct when every copy is token 0 and the guess hits the target; a problem's reward
is pass@k over its samples. Greedy decoding scores 1/4 at any k (every sample guesses token 0). A
per-position policy (greedy copies, a guess spread evenly over tokens 0-3) scores 1 - (3/4)^k; one
static (T, P) must trade copy errors against a narrow guess. Expected rewards are exact
(`expected_pass_at_k`): the positions are independent given their type.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.features import hard_top_p_filter, scale_by_temperature
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.training.advantages import round_weights
from autodeco_lp.training.losses import autodeco_loss
from autodeco_lp.training.outcome_loss import outcome_backward
from autodeco_lp.training.policy import policy_distribution, sample_top_p

VOCAB = 8
TARGETS = 4  # the guess's target is uniform over tokens 0 .. TARGETS - 1
COPY_LOGITS = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
GUESS_LOGITS = (1.5, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0)


@dataclass(frozen=True)
class ToyTask:
    copies: int = 4
    k: int = 4  # the reward is pass@k

    @property
    def hidden(self) -> torch.Tensor:
        """`(2, 2)`: row 0 the copy position's hidden state, row 1 the guess position's."""
        return torch.eye(2)

    @property
    def logits(self) -> torch.Tensor:
        """`(2, V)`: the copy and guess positions' logits."""
        return torch.tensor([COPY_LOGITS, GUESS_LOGITS])

    def projection(self) -> OutputProjection:
        """The `lm_head` that maps each one-hot hidden state to its logits (for the likelihood losses)."""
        return OutputProjection(self.logits.T.contiguous(), None, None)  # (V, H = 2)

    def heads(self, seed: int = 0) -> AutoDecoHeads:
        """Freshly initialised heads for this task (T ~ 1, P ~ 0.5 at the start)."""
        torch.manual_seed(seed)
        return AutoDecoHeads(AutoDecoConfig(hidden_size=2, vocab_size=VOCAB))

    def positions(self, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states `(samples * (copies + 1), 2)` and logits `(samples * (copies + 1), V)` of
        `samples` completions, each its copies then its guess."""
        types = torch.tensor([0] * self.copies + [1]).repeat(samples)
        return self.hidden[types], self.logits[types]

    def correct(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """tokens `(samples, copies + 1)`, targets `(samples,)` -> `(samples,)` 0/1."""
        return ((tokens[:, :-1] == 0).all(dim=-1) & (tokens[:, -1] == targets)).float()

    def expected_pass_at_k(self, copy_probs: torch.Tensor, guess_probs: torch.Tensor) -> float:
        """Exact expected pass@k of a policy whose token distributions are `copy_probs` and
        `guess_probs` (`(V,)` each), over the uniform target."""
        success = copy_probs[0] ** self.copies * guess_probs[:TARGETS]  # (TARGETS,) per target
        return float((1 - (1 - success) ** self.k).mean())

    def static_rewards(self, temperatures: torch.Tensor, top_ps: torch.Tensor) -> torch.Tensor:
        """Exact expected pass@k of static decoding at each (T, P) pair (`(S,)` each; the hard
        nucleus, as inference) -> `(S,)`."""
        s = temperatures.numel()
        logits = self.logits.repeat(s, 1)  # (2S, V): copy, guess, copy, guess, ...
        probs = policy_distribution(logits, temperatures.repeat_interleave(2), top_ps.repeat_interleave(2), 0.0)
        copy, guess = probs.view(s, 2, -1).unbind(dim=1)  # (S, V) each
        success = copy[:, :1] ** self.copies * guess[:, :TARGETS]  # (S, TARGETS)
        return (1 - (1 - success) ** self.k).mean(dim=-1)

    def static_reward(self, temperature: float, top_p: float) -> float:
        """`static_rewards` at one (T, P)."""
        return float(self.static_rewards(torch.tensor([temperature]), torch.tensor([top_p]))[0])

    @torch.no_grad()
    def heads_reward(self, heads: AutoDecoHeads) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Exact expected pass@k of AutoDeco with `heads` (the inference rule: their T and P, the
        hard nucleus), and their `(T, P)` at the copy and guess positions (`(2,)` each)."""
        t, p = heads(self.hidden, self.logits)
        probs = policy_distribution(self.logits, t, p, sigma=0.0)
        return self.expected_pass_at_k(probs[0], probs[1]), t, p

    def best_static(self, temperatures, top_ps) -> tuple[float, float, float]:
        """`(reward, T, P)` of the best static setting on the grid `temperatures x top_ps`."""
        grid_t, grid_p = torch.meshgrid(torch.tensor(temperatures), torch.tensor(top_ps), indexing="ij")
        rewards = self.static_rewards(grid_t.flatten(), grid_p.flatten())
        best = int(rewards.argmax())
        return float(rewards[best]), float(grid_t.flatten()[best]), float(grid_p.flatten()[best])


def sample_policy_tokens(
    heads: AutoDecoHeads, hidden: torch.Tensor, logits: torch.Tensor, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """One token per position `(N,)` drawn from the training policy (what `PolicyProcessor` does inside
    `generate`): the heads' T, P drawn around the head's P, the hard nucleus."""
    with torch.no_grad():
        temperature, top_p = heads(hidden, logits)
        filtered = hard_top_p_filter(scale_by_temperature(logits, temperature), sample_top_p(top_p, sigma, generator))
        return torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=generator).squeeze(-1)


def fit_outcome_toy(
    task: ToyTask,
    heads: AutoDecoHeads,
    *,
    rounds: int = 60,
    problems_per_round: int = 64,
    group_size: int = 8,
    learning_rate: float = 3e-3,
    sigma: float = 0.5,
    seed: int = 0,
) -> AutoDecoHeads:
    """Train `heads` with the outcome objective on the toy task (pass@k reward, leave-one-out
    advantages), exactly as `autodeco-fit --objective outcome` does on a real task."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(heads.parameters(), lr=learning_rate)
    samples = problems_per_round * group_size
    hidden, logits = task.positions(samples)  # (samples * L, 2), (samples * L, V)
    for _ in range(rounds):
        targets = torch.randint(TARGETS, (problems_per_round,), generator=generator).repeat_interleave(group_size)
        tokens = sample_policy_tokens(heads, hidden, logits, sigma, generator)  # (samples * L,)
        rewards = task.correct(tokens.view(samples, -1), targets)  # (samples,)
        weights = round_weights(rewards.view(problems_per_round, group_size), task.k)  # (samples,)
        weights = weights.repeat_interleave(task.copies + 1)  # (samples * L,)
        optimizer.zero_grad()
        outcome_backward(heads, hidden, tokens, weights, task.projection(), sigma=sigma, chunk_size=4096)
        optimizer.step()
    return heads


def fit_likelihood_toy(
    task: ToyTask,
    heads: AutoDecoHeads,
    *,
    rows: int = 4096,
    steps: int = 300,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> AutoDecoHeads:
    """Train `heads` with the released objective (`LossConfig()`: temperature loss with easy-token
    drop, soft top-p loss, DFT) on rejection samples: completions of the base model at T = 1, P = 1
    kept when correct, as the paper builds its data."""
    generator = torch.Generator().manual_seed(seed)
    hidden, logits = task.positions(rows)
    tokens = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
    targets = torch.randint(TARGETS, (rows,), generator=generator)
    kept = task.correct(tokens.view(rows, -1), targets).bool().repeat_interleave(task.copies + 1)
    hidden, labels = hidden[kept], tokens[kept]
    optimizer = torch.optim.Adam(heads.parameters(), lr=learning_rate)
    for _ in range(steps):
        optimizer.zero_grad()
        autodeco_loss(heads, hidden, labels, task.projection(), generator=generator).backward()
        optimizer.step()
    return heads
