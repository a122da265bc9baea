"""Elections: the election timer, campaigns with pre-vote, granting votes, the candidate's
step function.

A follower whose randomized election timeout passes (and which may campaign at all, see
``_may_campaign``) first runs a **pre-vote** at ``term + 1`` without changing its term;
only if a majority would vote for it does it start the real election. Votes count only
from the voters of the configuration in effect. Granting a vote (``_handle_request_vote``)
is the same in every role; the rules that refuse one without looking at the log (leader
stickiness, a removed node, a joining node) sit in :meth:`~.core.RaftCore.step`.
"""

from __future__ import annotations

from ..base import Message, Role
from .messages import (
    AppendEntries,
    InstallSnapshot,
    ReadIndexRequest,
    RequestVote,
    VoteResponse,
)
from .progress import granted_votes
from .state import RaftState

__all__ = ["ElectionRole"]


class ElectionRole(RaftState):
    """Campaigning and voting (a part of :class:`~.core.RaftCore`)."""

    def _tick_election(self) -> None:
        """One tick as follower or (pre-)candidate: campaign when the timer runs out."""
        if self.election_elapsed >= self.randomized_timeout and self._may_campaign():
            self._campaign(pre_vote=self.config.pre_vote)

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        """Ask the voters for their votes (at ``term + 1`` without moving to it: pre-vote)."""
        self.election_elapsed = 0
        self.randomized_timeout = self._random_timeout()
        if pre_vote:
            vote_term = self._term + 1
            self._set_role(Role.PRE_CANDIDATE, None)
        else:
            self._term += 1
            self.vote = self.node_id
            self._hs_dirty = True
            vote_term = self._term
            self._set_role(Role.CANDIDATE, None)
        self.votes = {self.node_id: True}
        self._fail_remote_reads()
        if self._tally() >= self.quorum:
            self._won_election(pre_vote)
            return
        last = self.last_index
        last_term = self.term_at(last)
        for peer in self._other_voters:
            self._send(
                RequestVote(self.node_id, peer, vote_term, last, last_term, pre_vote, transfer)
            )

    def _tally(self) -> int:
        """Granted votes of voters of the configuration in effect (ours only if we are one)."""
        return granted_votes(self.votes, self._conf.voters)

    def _won_election(self, pre_vote: bool) -> None:
        """A majority voted: a won pre-vote starts the real election, a won election leads."""
        if pre_vote:
            self._campaign(pre_vote=False)
        else:
            self._become_leader()

    def _step_candidate(self, m: Message) -> None:
        """Handle a message of the current term as pre-candidate or candidate."""
        if isinstance(m, VoteResponse):
            self._handle_vote_response(m)
        elif isinstance(m, AppendEntries | InstallSnapshot):
            # The leader of this term has been elected: follow it.
            self._become_follower(self._term, m.src)
            self._step_follower(m)
        elif isinstance(m, ReadIndexRequest):
            self._refuse_read(m)

    def _handle_request_vote(self, m: RequestVote) -> None:
        """Grant or refuse a (pre-)vote on the merits of the candidate's log."""
        up_to_date = self._log.is_up_to_date(m.last_index, m.last_term)
        if m.pre_vote:
            granted = m.term > self._term and up_to_date
            self._send(
                VoteResponse(self.node_id, m.src, m.term if granted else self._term, granted, True)
            )
            return
        can_vote = self.vote == m.src or (self.vote is None and self._leader is None)
        granted = can_vote and up_to_date
        if granted:
            self.vote = m.src
            self._hs_dirty = True
            self.election_elapsed = 0
        self._send(VoteResponse(self.node_id, m.src, self._term, granted, False))

    def _handle_vote_response(self, m: VoteResponse) -> None:
        """Count a (pre-)vote of this round; win, or give up once a majority refused."""
        if m.pre_vote:
            if self._role is not Role.PRE_CANDIDATE or m.term != self._term + 1:
                return
        elif self._role is not Role.CANDIDATE or m.term != self._term:
            return
        if m.src not in self._other_voters:
            self._count("vote-from-non-voter")  # only the voters of our configuration count
            return
        self.votes[m.src] = m.granted
        if self._tally() >= self.quorum:
            self._won_election(m.pre_vote)
        elif len(self.votes) - self._tally() >= self.quorum:
            self._become_follower(self._term, None)
