/*
 * Suspend and resume with relid permutation, modelled for spin: the guest's event dispatch
 * (as in dispatch.pml) across a suspend that closes every channel and unloads, and a resume
 * in which the host re-offers the same devices under permuted relids.
 *
 * Two devices X and Y (channel objects 1 and 2: the Channel object survives the cycle, only
 * its receive state is let go and built again) and two relids A and B (1 and 2; relid r is
 * bit r of the event page word). Before the suspend X is published at A and Y at B; after the
 * resume X is at B and Y at A. Each object has one inbound ring per generation (0 before the
 * suspend, 1 after it): four rings, X0 = 1, X1 = 2, Y0 = 3, Y1 = 4 (ring k holds CAP packets;
 * the host writes, the guest reads), each with its own "live" flag (the IncomingRing and the
 * receive state behind Channel::in_ exist). The drain hand-off flags belong to the object and
 * survive the cycle. NVP virtual processors (1 by default) each have an EventDispatch
 * (events_ready, pending, dispatching), an event page word, a doorbell counter and a
 * registered ChannelTable dispatcher whose hazard word names the relid it delivers (0: none).
 * Each VP has one thread that registers the dispatcher, starts the VP and then waits on its
 * doorbell (RAISERS0 = 1 of dispatch.pml). With MOVE (and NVP = 2) each host signal goes to
 * either VP.
 *
 * Steps, with the labels of the C++ ("<class> <label>"); the ring reader and writer, the
 * doorbell, EventDispatch K1-K4 and Channel G1-G4 are those of dispatch.pml:
 *   Host         one thread per device. Gen 0: once OpenChannel of the device's gen-0 ring
 *                reached it, writes N0 packets (RingBuffer writer, with the interrupt_mask
 *                and pending_send_sz handshakes) and signals the relid it offered the device
 *                under (A for X, B for Y); stops writing once it sees CloseChannel (a write in
 *                progress completes, and may still signal: a stale bit), then answers the
 *                close (it no longer touches that ring). Gen 1: once OpenChannel of the new
 *                ring reached it, writes N1 packets and signals the re-offered relid (B for X,
 *                A for Y). Signal: set the relid's bit in the chosen VP's page word (release;
 *                model-only tags on the bit say which ring the signal is for), ring that VP's
 *                doorbell if the bit was clear (and sometimes also when it was set).
 *   Dispatch     Raise as in dispatch.pml; a pass: EventPage S1 exchange(word, 0) (acq_rel:
 *                takes every set bit of the word at once), then for each taken relid, lowest
 *                first: ChannelTable D1 hazard[vp] = relid; ChannelTable D2 t = slot[relid]
 *                (seq_cst); t != null: t->OnEvent, else a spurious event (counted, ignored);
 *                a requeue sets the relid's bit again and pending = 1; ChannelTable D3
 *                hazard[vp] = 0.
 *   OnEvent      reads the receive state (callback_mode_) of the object's current ring; Channel
 *                G1..G4; each drain (DrainFromDispatch's loop) reads in_ again: the ring that is
 *                current when it starts. As in the C++ (and unlike dispatch.pml), a drain that
 *                stops at its budget with packets left keeps the ring masked, and OnEvent
 *                returns "requeue" right after G3, without the G4 re-check.
 *   Control      the bus executor's thread. Open(device, relid): attach the receive state of a
 *                fresh ring (Channel::Open: in_.emplace, which destroys any ring still there),
 *                ChannelTable P1 Publish (CAS null -> object: the slot must be empty), then
 *                OpenChannel. Before the suspend: Open(X, A), Open(Y, B). Suspend, at any
 *                moment relative to the traffic and the dispatchers (CloseAll, then Unload):
 *                for X then Y, ChannelTable R1 Unpublish (CAS object -> null), CloseChannel, the
 *                host's answer, then the close completes only once a Busy(relid) check
 *                (ChannelTable R2 read the registered mask, ChannelTable R3 read each
 *                registered hazard, seq_cst: BusExecutor::TryFinishRetire's InUse) finds no
 *                dispatcher announcing the relid; the executor re-checks until then (here: it
 *                waits until the dispatcher it saw has withdrawn), it never detaches early.
 *                Completing it detaches the receive state (Channel::TryDetachReceive: in_
 *                reset: any later access to that ring is a use after free). Then Unload; the
 *                host forgets the relids. Resume: the host re-offers X at B and Y at A (in
 *                either order); OfferResumed: Channel::Rebind to the new relid (the object is
 *                the same), then Open(X, B) and Open(Y, A), in the order of the re-offers.
 *
 * Stale bits: a bit the host set before a close (a signal racing CloseChannel) may still be
 * set after the resume, when its relid belongs to the other device; its delivery to the
 * object now published there is a spurious wake-up of that object's gen-1 ring, which is
 * allowed. spin explores every interleaving under sequential consistency, with each step one
 * atomic operation of the C++ (see dispatch.pml for the fences that make that hold).
 *
 * Checks:
 *   a) No use after detach: every access of a dispatcher to a ring or to the receive state
 *      asserts that the ring is live; Open's in_.emplace destroys whatever ring is still
 *      attached, and the close's detach destroys the current one.
 *   b) No lost interrupt across the cycle: at the end (timeout: no process can move) both
 *      hosts are done and every gen-1 packet of both devices was read by its own object
 *      (packets carry sequence numbers per ring, and the reader asserts each one is the next
 *      one of the ring it reads: exactly once, in order); the gen-0 rings are detached and the
 *      gen-1 rings live, X published at B and Y at A.
 *   c) Gen-0 packets are read in order, exactly once, while they are read (the close may
 *      cancel the rest: allowed).
 *   d) A signal tagged for (object u, generation 1) is only ever delivered to u: when a
 *      dispatcher loads its target, a taken bit carrying a tag of ring X1 (Y1) must have
 *      loaded X (Y).
 *
 * Sizes (cpp defines, model_test.sh): NVP, MOVE, CAP, BUDGET; N0 and N1 (X's packets in its
 * gen-0 and gen-1 rings), N0Y and N1Y (Y's, by default the same); RESUME_ORDER (0: the host
 * re-offers the devices in either order, 1: X first, 2: Y first). Planted bugs, each of which
 * spin must find:
 *   BUG_PUBLISH_OLD_RELID       the resume publishes each object under its old relid
 *   BUG_DETACH_WHEN_BUSY        the close detaches the ring right after the host's answer,
 *                               without waiting for Busy(relid) to clear
 *   BUG_OPEN_BEFORE_PUBLISH     the resume sends OpenChannel before Publish
 *   BUG_RESUME_BEFORE_RETIRE    each device is resumed as soon as its own close completed:
 *                               X is opened at B before Y's retire emptied that slot
 *   BUG_UNLOAD_BEFORE_DETACH    the suspend goes on (Unload, resume) once the host answered
 *                               the closes, and the Busy check and detach run later, in the
 *                               background (the executor's re-checks of a deferred retire):
 *                               that detach then tears down the resumed ring. (The C++ has a
 *                               second guard, left out here: BusExecutor::Open refuses a
 *                               channel whose previous retire is still pending.)
 *   BUG_LOAD_BEFORE_TAKE        the dispatcher loads the slot before it takes the bit
 * PROBE_STALE_TO_OTHER asserts that no signal for one device's gen-0 ring is ever delivered to
 * the other device; spin refutes it (a stale bit reaches the object the relid now belongs
 * to), which shows the model does reach the relid-permutation race it is about.
 */

#ifndef NVP
#define NVP 1
#endif
#ifndef BUDGET
#define BUDGET 1
#endif
#ifndef CAP
#define CAP 1
#endif
#ifndef N0
#define N0 1          /* packets the host writes to X's gen-0 ring (at most: the close cuts it) */
#endif
#ifndef N1
#define N1 1          /* packets the host writes to X's gen-1 ring */
#endif

#ifndef N0Y
#define N0Y N0        /* Y's gen-0 packets (X: N0) */
#endif
#ifndef N1Y
#define N1Y N1        /* Y's gen-1 packets (X: N1) */
#endif
#ifndef RESUME_ORDER
#define RESUME_ORDER 0 /* the host re-offers X first (1), Y first (2) or either (0) */
#endif

#define NOBJ 3        /* objects X = 1, Y = 2; index 0 is "no object" */
#define NREL 2        /* relids A = 1, B = 2 (bit r of the page word) */
#define NRING 5       /* rings X0 = 1, X1 = 2, Y0 = 3, Y1 = 4; index 0 is "no ring" */
#define RING(u, g) (2 * (u) - 1 + (g))
#define PF(vp, r) page_for[(vp) * (NREL + 1) + (r)]

/* ---- per VP: event page word, doorbell, EventDispatch, hazard ---- */
byte page[NVP];                   /* the page word: bit r = relid r signalled */
byte page_for[NVP * (NREL + 1)];  /* model only: bit k set = relid's bit carries a signal for ring k */
byte db[NVP];                     /* doorbell counter */
bit ready[NVP];                   /* EventDispatch events_ready */
bit pending[NVP];                 /* EventDispatch pending */
bit dispatching[NVP];             /* EventDispatch dispatching */
byte hazard[NVP];                 /* ChannelTable hazard word: the relid delivered, 0 = none */
byte regmask = 0;                 /* ChannelTable registered dispatchers (bit vp) */

/* ---- the channel table ---- */
byte slot[NREL + 1];              /* relid -> object (0 = empty) */

/* ---- per object (the Channel, which survives the cycle) ---- */
byte cur[NOBJ];                   /* the ring in_ holds (0 = never opened) */
bit drain_pending[NOBJ];
bit draining[NOBJ];

/* ---- per ring ---- */
bit live[NRING];                  /* the ring and the receive state exist (not detached) */
bit opened[NRING];                /* OpenChannel reached the host */
bit close_req[NRING];             /* CloseChannel reached the host */
bit close_ack[NRING];             /* the host answered it: it no longer touches the ring */
byte wi[NRING];                   /* ring write_index, in packets */
byte ri[NRING];                   /* ring read_index (committed) */
byte priv[NRING];                 /* the reader's private read position */
bit mask[NRING];                  /* ring interrupt_mask */
byte pend[NRING];                 /* ring pending_send_sz, in packets (0 = none) */
bit host_sig[NRING];              /* the guest signalled the host for this ring */
byte buf[NRING * CAP];            /* packet sequence numbers in the ring's slots */
byte consumed[NRING];             /* packets the callback received */

byte host_done = 0;               /* device hosts that wrote all their gen-1 packets */
bool unloaded = false;            /* Unload went out: the host forgot the relids */

#define USE(k) assert(live[k])

/* ---------------------------------------------------------------------------------------- */
/* Host side                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* Set relid r's bit in the chosen VP's page (release), tagged for ring k; ring the doorbell
 * if the bit was clear. */
inline Signal(r, k) {
#ifdef MOVE
  select (vp : 0 .. NVP - 1);
#else
  vp = 0;
#endif
  atomic { was = (page[vp] >> r) & 1; page[vp] = page[vp] | (1 << r); PF(vp, r) = PF(vp, r) | (1 << k) };
  if
  :: !was -> db[vp]++
  :: was -> skip
  :: was -> db[vp]++         /* a host that rings every time */
  fi;
  vp = 0;
  was = 0
}

/* Write packet pk to ring k, signalling relid r (RingBuffer writer). Gives up on a close. */
inline WritePacket(k, pk, r) {
  do
  :: close_req[k] -> break
  :: else ->
     q = ri[k];                                       /* read_index: room? */
     if
     :: wi[k] - q >= CAP ->
        pend[k] = 1;                                  /* full: pending_send_sz, full fence */
        if
        :: wi[k] - ri[k] < CAP -> pend[k] = 0         /* room after all: retry */
        :: else ->
           if
           :: atomic { host_sig[k] -> host_sig[k] = 0 }; pend[k] = 0
           :: close_req[k] -> skip
           fi
        fi
     :: else ->
        atomic { buf[k * CAP + wi[k] % CAP] = pk; old = wi[k]; wi[k]++ };
        m = mask[k];                                  /* interrupt_mask */
        q = ri[k];                                    /* read_index: empty before? */
        if
        :: m == 0 && q == old -> Signal(r, k)
        :: else -> skip
        fi;
        m = 0;
        old = 0;
        break
     fi;
     q = 0
  od;
  q = 0
}

/* The host's side of device u: offered at relid u before the suspend, at 3 - u after. */
proctype Host(byte u; byte n0; byte n1) {
  byte pk, q, old, vp;
  bit m, was;
  (opened[RING(u, 0)]);
  pk = 1;
  do
  :: close_req[RING(u, 0)] -> break
  :: else ->
     if
     :: pk <= n0 -> WritePacket(RING(u, 0), pk, u); pk++
     :: else -> break
     fi
  od;
  (close_req[RING(u, 0)]);
  close_ack[RING(u, 0)] = 1;          /* the host no longer touches the gen-0 ring */
  (opened[RING(u, 1)]);               /* re-offered at 3 - u, opened again */
  pk = 1;
  do
  :: pk <= n1 -> WritePacket(RING(u, 1), pk, 3 - u); pk++
  :: else -> break
  od;
  host_done++
}

/* ---------------------------------------------------------------------------------------- */
/* Guest side: ring reader, Channel drain hand-off, ChannelTable delivery, EventDispatch      */
/* ---------------------------------------------------------------------------------------- */

/* RingBuffer reader with a budget (Channel::DrainRing, keep_masked), on the ring object t
 * holds now (in_). Sets `left` when the budget ran out with packets still in the ring (the
 * ring then stays masked: the requeue comes back for them); leaves that ring in k. */
inline DrainRing(t) {
  atomic { k = cur[t]; USE(k); n = 0; left = 0; mask[k] = 1 };    /* in_; interrupt_mask = 1 */
  do
  :: do                                                            /* read packets */
     :: atomic { n < BUDGET && wi[k] != priv[k] ->                 /* acquire write_index */
          USE(k);
          assert(buf[k * CAP + priv[k] % CAP] == consumed[k] + 1); /* in order, exactly once */
          consumed[k]++;
          priv[k]++;
          n++ }
     :: atomic { (n >= BUDGET || wi[k] == priv[k]) -> USE(k) }; break
     od;
     if                                                            /* commit read_index */
     :: atomic { priv[k] != ri[k] -> USE(k); oldri = ri[k]; ri[k] = priv[k] };
        atomic { USE(k); p = pend[k] };                            /* fence; pending_send_sz */
        if
        :: p != 0 ->
           atomic { USE(k); w = wi[k] };
           if
           :: (CAP - (w - priv[k])) >= (priv[k] - oldri) &&
              (CAP - (w - priv[k])) - (priv[k] - oldri) < p &&
              (CAP - (w - priv[k])) >= p -> host_sig[k] = 1
           :: else -> skip
           fi
        :: else -> skip
        fi;
        atomic { oldri = 0; p = 0; w = 0 }
     :: atomic { priv[k] == ri[k] -> USE(k) }                    /* nothing to commit */
     fi;
     if                                /* at the budget: more left? (still masked) */
     :: n >= BUDGET ->
        atomic { USE(k); left = (wi[k] != priv[k]) };
        if
        :: left -> break                       /* keep_masked: the requeue comes back */
        :: else -> skip
        fi
     :: else -> skip
     fi;
     atomic { USE(k); mask[k] = 0 };                               /* unmask, full fence */
     if                                                            /* re-read write_index */
     :: atomic { wi[k] != priv[k] -> USE(k) };
        if
        :: n < BUDGET -> atomic { USE(k); mask[k] = 1 }            /* mask, read again */
        :: else -> atomic { USE(k); mask[k] = 1 }; left = 1; break /* at the budget: more */
        fi
     :: atomic { wi[k] == priv[k] -> USE(k) }; break
     fi
  od;
  n = 0
}

/* Channel::OnEvent in callback mode: the receive state, then the G hand-off. Result in rq. */
inline OnEvent(t) {
  atomic { USE(cur[t]); rq = 0; drain_pending[t] = 1 };           /* callback_mode_; Channel G1 */
  do
  :: atomic { ok = (draining[t] == 0); if :: ok -> draining[t] = 1 :: else -> skip fi };
     if                                                            /* Channel G2 */
     :: !ok -> rq = 0; break
     :: else ->
        do
        :: atomic { ok = drain_pending[t]; drain_pending[t] = 0 };
           if
           :: ok ->
              DrainRing(t);
              if
              :: left -> rq = 1; left = 0; break
              :: else -> skip
              fi
           :: else -> break
           fi
        od;
        draining[t] = 0;                                           /* Channel G3 */
        if
        :: rq -> break                                             /* more: requeue */
        :: else -> skip
        fi;
        atomic { ok = drain_pending[t] };                          /* Channel G4 */
        if
        :: !ok -> break
        :: else -> skip
        fi
     fi
  od;
  ok = 0
}

/* ChannelTable::Dispatcher::Deliver for relid r, by VP vp: the hazard and the slot load. */
inline LoadTarget(vp, r) {
  hazard[vp] = r;                                                  /* ChannelTable D1 */
  t = slot[r]                                                      /* ChannelTable D2 */
}

/* The rest of Deliver: check the tags, OnEvent on the loaded target, requeue, leave. */
inline DeliverLoaded(vp, r) {
  /* d) a signal for a gen-1 ring reaches the object that owns it */
  assert(!((tags >> RING(1, 1)) & 1) || t == 1);
  assert(!((tags >> RING(2, 1)) & 1) || t == 2);
#ifdef PROBE_STALE_TO_OTHER
  assert(!(((tags >> RING(1, 0)) & 1) && t == 2) && !(((tags >> RING(2, 0)) & 1) && t == 1));
#endif
  if
  :: t != 0 ->
     OnEvent(t);
     if
     :: rq ->                                         /* requeue: bit again, another pass */
        atomic { page[vp] = page[vp] | (1 << r); PF(vp, r) = PF(vp, r) | (1 << k) };
        pending[vp] = 1
     :: else -> skip
     fi;
     rq = 0
  :: else -> skip                                                  /* spurious */
  fi;
  atomic { hazard[vp] = 0; t = 0; k = 0; tags = 0 }                /* ChannelTable D3 */
}

/* One pass over VP vp's page word. */
inline Scan(vp) {
#ifdef BUG_LOAD_BEFORE_TAKE
  r = 1;
  do
  :: r <= NREL ->
     LoadTarget(vp, r);                    /* the slot loaded before the bit is taken */
     if
     :: atomic { (page[vp] >> r) & 1 -> page[vp] = page[vp] & ~(1 << r); tags = PF(vp, r); PF(vp, r) = 0 };
        DeliverLoaded(vp, r)
     :: else -> atomic { hazard[vp] = 0; t = 0 }
     fi;
     r++
  :: else -> break
  od;
  r = 0
#else
  if                                                               /* EventPage S1 */
  :: atomic { page[vp] != 0 -> bits = page[vp]; page[vp] = 0;
              tA = PF(vp, 1); PF(vp, 1) = 0; tB = PF(vp, 2); PF(vp, 2) = 0 };
     r = 1;
     do
     :: r <= NREL ->
        if
        :: (bits >> r) & 1 ->
           if
           :: r == 1 -> tags = tA
           :: else -> tags = tB
           fi;
           LoadTarget(vp, r);
           DeliverLoaded(vp, r)
        :: else -> skip
        fi;
        r++
     :: else -> break
     od;
     atomic { bits = 0; r = 0; tA = 0; tB = 0 }
  :: else -> skip
  fi
#endif
}

/* EventDispatch::Raise for VP vp. */
inline Raise(vp) {
  if
  :: ready[vp] == 0 -> skip                                        /* dropped */
  :: else ->
     pending[vp] = 1;                                              /* EventDispatch K1 */
     do
     :: atomic { ok = (dispatching[vp] == 0); if :: ok -> dispatching[vp] = 1 :: else -> skip fi };
        if                                                         /* EventDispatch K2 */
        :: !ok -> break
        :: else ->
           do
           :: atomic { pending[vp] == 1 -> pending[vp] = 0 };      /* exchange(pending, 0) */
              Scan(vp)
           :: else -> break
           od;
           dispatching[vp] = 0;                                    /* EventDispatch K3 */
           if                                                      /* EventDispatch K4 */
           :: pending[vp] == 0 -> break
           :: else -> skip
           fi
        fi
     od;
     ok = 0
  fi
}

/* A VP whose doorbell thread registers the dispatcher and starts it. */
proctype StartAndDoorbell(byte vp) {
  byte seen, t, k, tags, tA, tB, bits, r, n, oldri, p, w;
  bit ok, rq, left;
  regmask = regmask | (1 << vp);         /* register the dispatcher */
  ready[vp] = 1;                         /* events_ready */
  seen = db[vp];
  Raise(vp);                             /* the start-up pass */
end_wait:
  do
  :: db[vp] != seen ->                   /* the futex wait returns */
     seen = db[vp];
     Raise(vp)
  od
}

/* ---------------------------------------------------------------------------------------- */
/* Control: the bus executor                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* Channel::Open of object u with a fresh ring k, then PublishChannel at relid r, OpenChannel. */
inline Open(u, r, k) {
  atomic { live[cur[u]] = 0; cur[u] = k; live[k] = 1 };            /* in_.emplace; callback */
#ifdef BUG_OPEN_BEFORE_PUBLISH
  opened[k] = 1;
  atomic { assert(slot[r] == 0); slot[r] = u };
#else
  atomic { assert(slot[r] == 0); slot[r] = u };                    /* ChannelTable P1 */
  opened[k] = 1                                                    /* then OpenChannel */
#endif
}

/* Busy(r): does a registered dispatcher announce relid r? Result in busy; bi = the one. */
inline BusyCheck(r) {
  i = 0;
  busy = 0;
  regs = regmask;                                                  /* ChannelTable R2 */
  do
  :: i < NVP ->
     if
     :: ((regs >> i) & 1) && hazard[i] == r -> busy = 1; bi = i; break  /* ChannelTable R3 */
     :: else -> i++
     fi
  :: else -> break
  od;
  i = 0;
  regs = 0
}

/* The close completes: Busy(r) re-checked until clear, then the receive side is let go. */
inline FinishRetire(u, r) {
#ifndef BUG_DETACH_WHEN_BUSY
  do
  :: BusyCheck(r);
     if
     :: !busy -> break
     :: else -> (hazard[bi] != r)           /* re-check once that dispatcher has moved on */
     fi;
     busy = 0;
     bi = 0
  od;
  busy = 0;
  bi = 0;
#endif
  live[cur[u]] = 0                          /* Channel::TryDetachReceive: in_.reset() */
}

/* Close object u, published at relid r: ChannelTable R1, CloseChannel, the host's answer. */
inline BeginClose(u, r) {
  atomic { assert(slot[r] == u); slot[r] = 0 };                    /* ChannelTable R1 */
  close_req[RING(u, 0)] = 1;                                       /* CloseChannel */
  (close_ack[RING(u, 0)])
}

#ifdef BUG_UNLOAD_BEFORE_DETACH
/* The executor's later re-checks of a deferred retire. */
proctype Reaper(byte u, r) {
  byte i, regs, bi;
  bit busy;
  FinishRetire(u, r)
}
#endif

proctype Control() {
  byte i, regs, bi;
  bit busy;
  Open(1, 1, RING(1, 0));                  /* X at A */
  Open(2, 2, RING(2, 0));                  /* Y at B */
  /* Suspend, at any moment relative to the host and the dispatchers. */
#ifdef BUG_RESUME_BEFORE_RETIRE
  BeginClose(1, 1);
  FinishRetire(1, 1);
  Open(1, 2, RING(1, 1));                  /* X at B: Y still holds it */
  BeginClose(2, 2);
  FinishRetire(2, 2);
  Open(2, 1, RING(2, 1))
#else
#ifdef BUG_UNLOAD_BEFORE_DETACH
  BeginClose(1, 1);
  run Reaper(1, 1);
  BeginClose(2, 2);
  run Reaper(2, 2);
#else
  BeginClose(1, 1);
  FinishRetire(1, 1);                      /* the close of X completes */
  BeginClose(2, 2);
  FinishRetire(2, 2);                      /* the close of Y completes */
#endif
  unloaded = true;                         /* Unload: the host forgets the relids */
  /* Resume: the host re-offers X at B and Y at A, in either order; Channel::Rebind each. */
#ifdef BUG_PUBLISH_OLD_RELID
#define RELID_X 1
#define RELID_Y 2
#else
#define RELID_X 2
#define RELID_Y 1
#endif
  if
  :: RESUME_ORDER != 2 -> Open(1, RELID_X, RING(1, 1)); Open(2, RELID_Y, RING(2, 1))
  :: RESUME_ORDER != 1 -> Open(2, RELID_Y, RING(2, 1)); Open(1, RELID_X, RING(1, 1))
  fi
#endif
}

/* At the end (no process can move): nothing was lost, the old rings are gone. */
proctype Checker() {
  timeout ->
  assert(host_done == 2);
  assert(consumed[RING(1, 1)] == N1 && ri[RING(1, 1)] == N1 && wi[RING(1, 1)] == N1);
  assert(consumed[RING(2, 1)] == N1Y && ri[RING(2, 1)] == N1Y && wi[RING(2, 1)] == N1Y);
  assert(!live[RING(1, 0)] && !live[RING(2, 0)] && live[RING(1, 1)] && live[RING(2, 1)]);
  assert(slot[1] == 2 && slot[2] == 1)
}

init {
  byte v = 0;
  atomic {
    run Control();
    run Host(1, N0, N1);
    run Host(2, N0Y, N1Y);
    do
    :: v < NVP -> run StartAndDoorbell(v); v++
    :: else -> break
    od;
    run Checker()
  }
}
