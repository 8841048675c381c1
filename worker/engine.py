"""The decoding engine: one thread that runs the model for every job of the worker.

Jobs hand their prepared prompt to the engine and wait. The engine admits new sequences
between decoding steps (continuous batching): text prompts that are waiting together are
prefilled together in one forward pass (left-padded to the longest); a prompt with
images or video, or a text longer than a piece, is prefilled a piece at a time
(worker.media_prefill), one at a time, a decoding step of the running batch between
pieces, so that the running streams keep their pace; the n choices of one request share
one prefill. Then they join the running batch, and every step decodes one token for all
of them at once. A prefilled prompt draws its first token with the next step: its last
hidden state goes through the lm_head together with the running rows' (on a small model
the lm_head is most of a step, and costs nearly as much for one row as for a dozen).
A sequence that finishes or is cancelled leaves the batch without disturbing the others.
After every step the events of all sequences, and the reads of their cancel flags, go to
Redis in one round trip, sent while the next step computes (worker.step_writes).

A sequence joins only when its whole length (prompt and completion budget) fits in the
KV cache budget beside the others (worker.kv_budget); until then it waits, in arrival
order: the first in line is never overtaken, so it joins at the latest once the batch
has emptied, which the verdict made sure is enough. A failure while prefilling one
sequence (out of memory, say) fails that sequence alone; the batch goes on (prompts
prefilled together are prefilled again one by one when their joint prefill fails).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis
import torch

from shared.session_scripts import SyncScripts
from worker import metrics
from worker.batch import SlotBatch
from worker.compiled import compiled_steps
from worker.errors import GenerationFailed
from worker.grammar import new_bitmask
from worker.logits_head import LogitsHead
from worker.media_prefill import Prefill, media_prefill
from worker.model import LoadedModel
from worker.sampler import sample_batch
from worker.sequence import Outcome, Sequence
from worker.session_writer import SessionWriter, flush_together
from worker.step_graphs import StepGraphs, bucketed_shape
from worker.step_writes import StepWrites

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 0.5
WAIT_SLICE_SECONDS = 0.5
# How often the cancel flags of sequences waiting for room are read.
WAITING_CHECK_SECONDS = 0.5


# Why a sequence left the engine without an end of its own.
LOST = "lost"  # the session is no longer this worker's
HANDOVER = "handover"  # the worker is shutting down and hands the session to another


def public_failure(error: BaseException) -> GenerationFailed:
    """What the job reports for a failure; the error itself is logged, not passed on."""
    out_of_memory = isinstance(error, torch.OutOfMemoryError | MemoryError)
    return GenerationFailed("out_of_memory" if out_of_memory else "generation_failed")


def batchable(group: list[Sequence], piece_tokens: int) -> bool:
    """A request whose prompt can be prefilled beside others: one fresh choice, text only,
    no longer than a piece."""
    if len(group) != 1 or group[0].generated:
        return False
    inputs = group[0].inputs
    rows, length = inputs["input_ids"].shape
    return prefill_kind(inputs) == "text" and rows == 1 and length <= piece_tokens


def prefill_kind(inputs: Any) -> str:
    """What a prompt holds, for the prefill-time metric: video, image or text."""
    if inputs.get("pixel_values_videos") is not None:
        return "video"
    return "image" if inputs.get("pixel_values") is not None else "text"


def prefilled_in_pieces(group: list[Sequence], piece_tokens: int) -> bool:
    """A prompt with images or video, or a text longer than a piece, of fresh choices (they
    share one prefill). In one pass, a prompt of thousands of tokens would stall every
    running stream for as long as its prefill takes."""
    fresh = len(group) == 1 or all(not s.generated for s in group)
    inputs = group[0].inputs
    return fresh and (prefill_kind(inputs) != "text" or inputs["input_ids"].shape[1] > piece_tokens)


@dataclass
class Arrival:
    """A prefilled prompt's rows, waiting for the next step to draw their first tokens."""

    rows: list[Sequence]
    hidden: torch.Tensor  # [rows, hidden size]: each row's state at its prompt's last position
    join: Callable[[], list[int]]  # copies the prompt's cache into the batch; each row's slot


@dataclass
class MediaPrefilling:
    rows: list[Sequence]
    pieces: Prefill
    positions: torch.Tensor
    started: float


def writers_of(sequences: Iterable[Sequence]) -> list[SessionWriter]:
    """Each session's writer once (a request's choices share theirs)."""
    return list({id(s.writer): s.writer for s in sequences}.values())


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        connection: redis.Redis,
        max_batch: int,
        outage_tolerance_seconds: float = 60.0,
        prefill_chunk_tokens: int = 512,
        cuda_graphs: bool = False,
        greedy_scan: bool = True,
    ) -> None:
        self._loaded = loaded
        self._scripts = SyncScripts(connection)
        self._outage_tolerance = outage_tolerance_seconds
        self._writes = StepWrites(self._scripts, outage_tolerance_seconds)
        self._max_batch = max_batch
        self._kv = loaded.kv
        # Handed in by the jobs' threads (a request's choices together)...
        self._pending: queue.Queue[list[Sequence]] = queue.Queue()
        # ...then held by the engine, in arrival order, until there is room in the batch.
        self._waiting: deque[list[Sequence]] = deque()
        self._next_waiting_check = 0.0
        self._stopped = threading.Event()
        self._handing_over = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._active: list[Sequence] = []
        # Prefilled in this round, joining the batch at its step.
        self._arrivals: list[Arrival] = []
        # Greedy rows' tokens from a bfloat16 lm_head, checked exactly (WORKER_GREEDY_BF16_SCAN).
        self._head = LogitsHead(loaded.model, greedy_scan_wanted=greedy_scan)
        # Decoding steps at fixed shapes, replayed from CUDA graphs (WORKER_CUDA_GRAPHS).
        self._graphs: StepGraphs | None = None
        if cuda_graphs and loaded.compiled_graphs:
            log.warning("WORKER_CUDA_GRAPHS is ignored: this WORKER_COMPILE mode captures graphs of its own")
        elif cuda_graphs:
            self._graphs = StepGraphs(self._step_forward, loaded.device)
            if not self._graphs.capturing:
                log.warning("CUDA graphs need a CUDA device: steps run at fixed shapes, eagerly")
        self._batch = self._new_batch()
        # The prompt with images or video being prefilled a piece at a time, if any.
        self._prefilling: MediaPrefilling | None = None
        self.prefill_chunk_tokens = prefill_chunk_tokens
        # Most text prompts prefilled in one forward pass (1: each on its own).
        self.max_prefill_rows = 16
        captured = self._graphs is not None and self._graphs.capturing
        log.info(
            "decoding steps %s%s; prompts prefilled in pieces of %d tokens",
            "compiled, " if loaded.compiled else "",
            "replayed from CUDA graphs" if captured else "run from Python",
            prefill_chunk_tokens,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)
        self._writes.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def hand_over(self) -> None:
        """Stop decoding for good: every sequence, running or waiting, leaves as handed over."""
        self._handing_over.set()

    def run(self, sequence: Sequence) -> Outcome | None:
        """Decode one sequence to its end (called from a job's thread, which waits).

        None: the sequence left without an end of its own (``sequence.interrupted`` says why).
        """
        return sequence.outcome() if self.run_group([sequence]) else None

    def run_group(self, group: list[Sequence]) -> bool:
        """Decode a request's choices to their ends; they share the prompt's prefill.

        False: they left without an end of their own (``interrupted`` says why).
        """
        if self._handing_over.is_set():
            for sequence in group:
                sequence.interrupt(HANDOVER)
            return False
        self._pending.put(group)
        for sequence in group:
            # Wait in short slices: RQ's job timeout is raised in this thread between them
            # (an untimed wait could not be interrupted); the job then fails its session,
            # whose cancel flag takes the sequences out of the batch.
            while not sequence.done.wait(WAIT_SLICE_SECONDS):
                pass
        for sequence in group:
            if sequence.error is not None:
                raise sequence.error
        return all(sequence.interrupted is None for sequence in group)

    def _run(self) -> None:
        with torch.no_grad() if self._loaded.compiled else torch.inference_mode():
            while not self._stopped.is_set():
                if self._handing_over.is_set():
                    self._interrupt_all(HANDOVER)
                    self._stopped.wait(IDLE_WAIT_SECONDS)
                    continue
                try:
                    self._check_waiting()
                    self._admit()
                    if self._prefilling is not None:
                        self._advance_prefill(self._prefilling)
                    if self._active or self._arrivals:
                        self._decode_step()
                        self._flush_and_retire()
                    self._note_occupancy()
                except Exception as error:  # the model failed: fail the batch, keep serving
                    rows = self._active + self._arriving()
                    log.exception("decoding step failed; failing %d sequences", len(rows))
                    self._writes.drain()
                    for sequence in rows:
                        sequence.fail(public_failure(error))
                    self._active, self._arrivals = [], []
                    self._batch = self._new_batch()

    def _interrupt_all(self, why: str) -> None:
        self._writes.drain()  # the jobs' threads take their writers back
        for sequence in self._active + self._arriving():
            sequence.interrupt(why)
        self._active, self._arrivals = [], []
        self._batch = self._new_batch()
        if self._prefilling is not None:
            for sequence in self._prefilling.rows:
                sequence.interrupt(why)
            self._prefilling = None
        self._take_pending(block=False)
        while self._waiting:
            for sequence in self._waiting.popleft():
                sequence.interrupt(why)

    def _take_pending(self, block: bool) -> None:
        """Move what the jobs handed in to the waiting line (waiting a little for one if asked)."""
        try:
            self._waiting.append(self._pending.get(block=block, timeout=IDLE_WAIT_SECONDS))
            while True:
                self._waiting.append(self._pending.get_nowait())
        except queue.Empty:
            pass

    def _arriving(self) -> list[Sequence]:
        return [sequence for arrival in self._arrivals for sequence in arrival.rows]

    def _admit(self) -> None:
        """Prefill waiting sequences, in order, while the batch has room."""
        self._take_pending(block=not self._active and not self._waiting and self._prefilling is None)
        # Text prompts that arrive together are prefilled together, in one forward pass.
        texts: list[Sequence] = []
        while self._waiting:
            group = self._waiting[0]
            joining = texts + (self._prefilling.rows if self._prefilling is not None else [])
            # Alone it always goes in: the verdict refused what cannot fit even then.
            if (self._active or joining) and not self._has_room_for(group, joining):
                break
            in_pieces = prefilled_in_pieces(group, self.prefill_chunk_tokens)
            if in_pieces and self._prefilling is not None:
                break  # one at a time, in arrival order
            self._waiting.popleft()
            if batchable(group, self.prefill_chunk_tokens) and len(texts) < self.max_prefill_rows:
                texts.append(group[0])
                continue
            self._prefill_or_fail(texts, self._prefill_texts)
            texts = []
            if in_pieces:
                self._prefill_or_fail(group, self._start_prefill)
            else:
                self._prefill_or_fail(group, self._prefill)
        self._prefill_or_fail(texts, self._prefill_texts)

    def _prefill_or_fail(self, rows: list[Sequence], prefill: Callable[[list[Sequence]], None]) -> bool:
        """Prefill the rows; a failure fails them alone (the batch is untouched)."""
        if not rows:
            return False
        try:
            prefill(rows)
        except Exception as error:
            log.exception("prefill failed for session(s) %s", ", ".join(s.writer.session_id for s in rows))
            for sequence in rows:
                sequence.fail(public_failure(error))
            return False
        return True

    def _has_room_for(self, group: list[Sequence], joining: list[Sequence] | None = None) -> bool:
        """Whether the batch, with these rows (and those joining with them), stays within
        MAX_BATCH and the KV budget.

        Every row's slot is as wide as the longest row, so the batch costs rows x its
        longest row; rows are counted at
        their full length (prompt and completion budget), which they may all reach.
        """
        members = self._active + self._arriving() + (joining or []) + group
        longest = max(s.reserved_tokens for s in members)
        return len(members) <= self._max_batch and self._kv.fits(len(members), longest)

    def _check_waiting(self) -> None:
        """Let sequences waiting for room leave as soon as they are cancelled or lost.

        A lost one: the session is no longer this worker's (its job timed out, say).
        Without this they would leave only after joining the batch, maybe much later.
        """
        now = time.monotonic()
        if not self._waiting or now < self._next_waiting_check:
            return
        self._next_waiting_check = now + WAITING_CHECK_SECONDS
        waiting = list(self._waiting)
        prefilling = [] if self._prefilling is None else [self._prefilling.rows]
        groups = waiting + prefilling
        flush_together(self._scripts, writers_of(g[0] for g in groups), self._outage_tolerance)
        for group in groups:
            for sequence in group:
                if sequence.writer.lost:
                    sequence.interrupt(LOST)
                elif sequence.writer.cancel_requested:
                    sequence.cancel()
                    sequence.done.set()
        self._waiting = deque(g for g in waiting if not all(s.finished for s in g))
        if prefilling and all(s.finished for s in prefilling[0]):
            self._prefilling = None  # nobody waits for it any more

    def _prefill_positions(self, inputs: Any) -> torch.Tensor:
        """3D rotary positions of the prompt (text, or text with images and video)."""
        input_ids = inputs["input_ids"]
        if inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None:
            positions, _ = self._loaded.model.model.get_rope_index(
                input_ids,
                mm_token_type_ids=inputs["mm_token_type_ids"],
                image_grid_thw=inputs.get("image_grid_thw"),
                video_grid_thw=inputs.get("video_grid_thw"),
                attention_mask=inputs.get("attention_mask"),
            )
            return positions  # type: ignore[no-any-return]
        length = input_ids.shape[1]
        return torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, 1, -1)

    def _prefill_texts(self, rows: list[Sequence]) -> None:
        """Prefill text prompts together, left-padded to the longest; each then joins its own slot."""
        if len(rows) == 1:
            self._prefill_rows(rows)
            return
        device = self._loaded.device
        lengths = [int(s.inputs["input_ids"].shape[1]) for s in rows]
        width = max(lengths)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        for row, (sequence, length) in enumerate(zip(rows, lengths, strict=True)):
            input_ids[row, width - length :] = sequence.inputs["input_ids"][0]
            mask[row, width - length :] = 1
        # Each row counts its positions from its first real token, whatever its padding.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        started = time.perf_counter()
        try:
            hidden, cache = self._head.hidden(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions.unsqueeze(0).expand(3, -1, -1),
                use_cache=True,
            )
        except Exception:
            # The batch is as it was: one by one, so that a prompt that cannot be prefilled
            # fails alone.
            log.warning("prefilling %d prompts together failed; prefilling them one by one", len(rows))
            for sequence in rows:
                self._prefill_or_fail([sequence], self._prefill_rows)
            return
        metrics.PREFILL.labels("text").observe(time.perf_counter() - started)
        metrics.PROMPT_TOKENS.inc(sum(lengths))
        for sequence, length in zip(rows, lengths, strict=True):
            sequence.next_position = length
            sequence.inputs = None

        def join() -> list[int]:
            return self._batch.add(cache, width, device, mask=mask)

        self._arrivals.append(Arrival(rows, hidden, join))

    def _prefill(self, group: list[Sequence]) -> None:
        """Prefill a request's rows and add them to the batch.

        Fresh choices share one prefill: its cache is copied into one row per choice. Rows
        that continue an earlier attempt have histories of their own, and are prefilled
        one by one.
        """
        if len(group) == 1 or all(not s.generated for s in group):
            self._prefill_rows(group)
        else:
            for sequence in group:
                self._prefill_rows([sequence])

    def _note_occupancy(self) -> None:
        metrics.RUNNING.set(len(self._active))
        metrics.WAITING.set(self._waiting_count())
        metrics.KV_CACHE_BYTES.set(self._kv.batch_bytes(self._batch.rows, self._batch.columns))
        metrics.KV_CACHE_BUDGET_BYTES.set(self._kv.total_bytes)

    @property
    def occupancy(self) -> tuple[int, int]:
        """(running, waiting) sequences, for the worker's status in /health."""
        return len(self._active), self._waiting_count()

    def _waiting_count(self) -> int:
        prefilling = 0 if self._prefilling is None else len(self._prefilling.rows)
        return sum(len(group) for group in self._waiting) + self._pending.qsize() + prefilling

    def _prefill_rows(self, rows: list[Sequence]) -> None:
        inputs = rows[0].inputs
        positions = self._prefill_positions(inputs)
        started = time.perf_counter()
        hidden, cache = self._head.hidden(**inputs, position_ids=positions, use_cache=True)
        metrics.PREFILL.labels(prefill_kind(inputs)).observe(time.perf_counter() - started)
        self._arrive(rows, hidden, cache, positions)

    def _start_prefill(self, rows: list[Sequence]) -> None:
        """Begin prefilling a prompt in pieces (images, video, a long text); ``_advance_prefill``
        goes on with it."""
        inputs = rows[0].inputs
        positions = self._prefill_positions(inputs)
        pieces = media_prefill(self._loaded.model, inputs, positions, self.prefill_chunk_tokens)
        self._prefilling = MediaPrefilling(rows, pieces, positions, time.perf_counter())

    def _advance_prefill(self, prefilling: MediaPrefilling) -> None:
        """Run the next piece of the prompt being prefilled; after the last, its rows arrive."""
        done: list[tuple[torch.Tensor, Any]] = []

        def next_piece(rows: list[Sequence]) -> None:
            try:
                next(prefilling.pieces)
            except StopIteration as finished:
                done.append(finished.value)

        # A piece that fails fails the prompt's rows alone, as a one-pass prefill would.
        if not self._prefill_or_fail(prefilling.rows, next_piece):
            self._prefilling = None
            return
        if not done:
            return
        self._prefilling = None
        hidden, cache = done[0]
        kind = prefill_kind(prefilling.rows[0].inputs)
        metrics.PREFILL.labels(kind).observe(time.perf_counter() - prefilling.started)
        self._arrive(prefilling.rows, hidden, cache, prefilling.positions)

    def _arrive(
        self, rows: list[Sequence], hidden: torch.Tensor, cache: Any, positions: torch.Tensor
    ) -> None:
        """The prompt's rows, prefilled (``hidden``: its last position's state), join at the next step."""
        metrics.PROMPT_TOKENS.inc(int(positions.shape[-1]))
        for sequence in rows:
            sequence.next_position = int(positions.max()) + 1
            sequence.inputs = None  # pixel data is no longer needed
        length, device, copies = positions.shape[-1], self._loaded.device, len(rows)

        def join() -> list[int]:
            return self._batch.add(cache, length, device, copies=copies)

        # The choices of one request share the prefill: each draws from the same state.
        self._arrivals.append(Arrival(rows, hidden.expand(copies, -1), join))

    def _pick(self, hidden: torch.Tensor, sequences: list[Sequence]) -> None:
        """Each row's next token from its last hidden state, handed to its sequence."""
        # Only where every row wants the bare argmax: a step with one row that needs its
        # logits makes them all in float32, since reading the float32 weight costs about as
        # much for that one row as for all of them.
        if self._head.scans and all(sequence.plain_greedy for sequence in sequences):
            tokens = self._head.greedy_tokens(hidden).tolist()
            for sequence, token in zip(sequences, tokens, strict=True):
                sequence.accept(token)
            metrics.GENERATION_TOKENS.inc(len(sequences))
            return
        self._sample(self._head.project(hidden), sequences)

    def _sample(self, logits: torch.Tensor, sequences: list[Sequence]) -> None:
        """Draw each row's next token, within its mask, and hand it to its sequence."""
        bitmask, masked = None, []
        for row, sequence in enumerate(sequences):
            if sequence.steering is None:
                continue
            if bitmask is None:
                bitmask = new_bitmask(len(sequences), logits.shape[-1])
            if sequence.steering.restrict(bitmask, row, sequence.parser):
                masked.append(row)
        sampled = sample_batch(
            logits,
            [s.sampling for s in sequences],
            [s.generated for s in sequences],
            bitmask=bitmask,
            masked_rows=masked,
            logprob_rows={row: s.top_logprobs for row, s in enumerate(sequences) if s.wants_logprobs},
        )
        for row, (sequence, token) in enumerate(zip(sequences, sampled.tokens, strict=True)):
            sequence.accept(token, sampled.logprobs.get(row))
        metrics.GENERATION_TOKENS.inc(len(sequences))

    def _decode_step(self) -> None:
        """The next token of every running row, and the first of every row that arrived."""
        started = time.perf_counter()
        rows = list(self._active)
        states = [self._decode(rows)] if rows else []
        arrivals, self._arrivals = self._arrivals, []
        for arrival in arrivals:
            # Placed after the running rows' step, which wrote a column of every slot in use.
            # A join that fails fails its prompt's rows alone, as a prefill that fails does.
            if self._prefill_or_fail(arrival.rows, partial(self._place, arrival)):
                states.append(arrival.hidden)
                rows.extend(arrival.rows)
        # The batch's rows from here: if the rest of the step fails, they fail with the others.
        self._active = rows
        if rows:
            # A sequence that continues an earlier attempt already has tokens: they are its history.
            self._pick(torch.cat(states), rows)
        metrics.DECODE_STEP.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(rows))

    def _place(self, arrival: Arrival, rows: list[Sequence]) -> None:
        for sequence, slot in zip(rows, arrival.join(), strict=True):
            sequence.slot = slot

    def _new_batch(self) -> SlotBatch:
        # Graphs, captured or compiled, are made per shape: the steps run at a few.
        fixed = self._graphs is not None or self._loaded.compiled
        return SlotBatch(bucketed_shape, keep_buffers=True) if fixed else SlotBatch()

    def _step_forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The model's step over the batch's cache: every row's last hidden state (compiled,
        where WORKER_COMPILE is set: a CUDA graph then replays the compiled step)."""
        assert self._batch.cache is not None, "a step needs rows"
        with compiled_steps(self._loaded.model):
            return self._head.step(self._batch.cache, input_ids, position_ids, mask)

    def _decode(self, sequences: list[Sequence]) -> torch.Tensor:
        """One step for every sequence (each is its slot's row, holes decode a dummy token);
        their last hidden states, in order."""
        device = self._loaded.device
        mask = self._batch.prepare_step()
        rows = mask.shape[0]  # the batch's rows, or more where steps run at fixed shapes
        tokens, positions = [0] * rows, [0] * rows
        for sequence in sequences:
            tokens[sequence.slot] = sequence.last_token
            positions[sequence.slot] = sequence.next_position
        slots = [s.slot for s in sequences]
        input_ids = torch.tensor(tokens, device=device).unsqueeze(1)
        position_tensor = torch.tensor(positions, device=device)
        if self._graphs is not None:
            hidden = self._graphs.run(self._batch, input_ids, position_tensor)
        else:
            hidden = self._step_forward(input_ids, position_tensor.view(1, -1, 1).expand(3, -1, -1), mask)
        if slots != list(range(rows)):  # holes, or rows added to reach a fixed shape
            hidden = hidden.index_select(0, torch.tensor(slots, device=device))
        self._batch.advance()
        for sequence in sequences:
            sequence.next_position += 1
        return hidden

    def _flush_and_retire(self) -> None:
        """Take the replies of the writes in flight, let finished rows leave, send the new events.

        A row leaves only once no write of its session is in flight: its job's thread then
        writes the rest itself (SessionWriter.finish).
        """
        self._writes.settle()
        for sequence in self._active:
            if sequence.writer.lost:
                sequence.interrupt(LOST)
            elif sequence.writer.cancel_requested and not sequence.finished:
                sequence.cancel()
        if any(s.finished for s in self._active):
            for sequence in self._active:
                if sequence.finished:
                    sequence.done.set()
            self._batch.free([s.slot for s in self._active if s.finished])
            self._active = [s for s in self._active if not s.finished]
        self._writes.send(writers_of(self._active))
