/*
 * Event dispatch, modelled for spin: the host -> guest signal path from the host's ring write
 * to the packet callback, and the lifetime of the channel object behind a relid.
 *
 * One relid R. Its slot in the channel table holds channel object 1 or 2 (0 = empty); object 2
 * is the new channel the host offers on R after object 1 was retired and released (relid
 * reuse). Each object has its own inbound ring (CAP packets; the host writes, the guest
 * reads), its own drain hand-off flags and its own "alive" flag (receive state and ring memory
 * not yet freed). NVP virtual processors each have an EventDispatch (events_ready, pending,
 * dispatching), an event page bit for R, a doorbell counter and a registered ChannelTable
 * dispatcher with its hazard word. VP 0 has two raising threads (RAISERS0 = 2): its doorbell
 * waiter and the thread that starts it, whose own Raise overlaps the waiter's (the K hand-off,
 * and the start-up race: the host may signal before events_ready is set and before the waiter
 * first looks). Other VPs (and VP 0 with RAISERS0 = 1) have one thread that starts the VP and
 * then waits on its doorbell. With MOVE every host signal goes to either VP (the channel
 * moves between VPs), so two VPs deliver R concurrently: the per-channel G hand-off.
 *
 * Steps, with the labels of the C++ ("<class> <label>"):
 *   Host         RingBuffer writer, per packet: copy the packet and publish write_index
 *                (release, then a full fence); read interrupt_mask; read read_index; signal
 *                only if the ring was empty before this write and the mask was clear. Signal:
 *                set R's bit in the chosen VP's event page (release), ring that VP's doorbell
 *                if the bit was clear (and sometimes also when it was set: both kinds of host).
 *                A full ring: store pending_send_sz (then a full fence), re-read read_index;
 *                room now -> clear it and retry, else wait for the guest's signal, then retry.
 *   Doorbell     seen = counter; Raise(); forever { wait until counter != seen;
 *                seen = counter (re-read); Raise() }.
 *   Start        register the dispatcher (ChannelTable registration); events_ready = 1;
 *                Raise() (the start-up pass: scans bits set before events_ready).
 *   Raise        if !events_ready: return (the raise is dropped). EventDispatch K1
 *                pending = 1; loop { EventDispatch K2 CAS dispatching 0 -> 1, on failure
 *                return; while (exchange(pending, 0) == 1) scan; EventDispatch K3
 *                dispatching = 0; EventDispatch K4 if pending == 0 return }.
 *   scan         EventPage S1 test-and-clear R's bit (acq_rel); if it was set: Deliver.
 *   Deliver      ChannelTable D1 hazard[vp] = R (fenced, below); ChannelTable D2 t = slot[R]
 *                (seq_cst); t != null: t->OnEvent, else a spurious event; if OnEvent asks for
 *                a requeue: set R's bit in this VP's page again and pending = 1 (another
 *                pass); ChannelTable D3 hazard[vp] = 0 (release).
 *   OnEvent      Channel G1 drain_pending = 1; loop { Channel G2 CAS draining 0 -> 1, on
 *                failure return false; while (exchange(drain_pending, 0)) { DrainRing; if the
 *                budget ran out with packets left: requeue = true, break }; Channel G3
 *                draining = 0; Channel G4 if drain_pending == 0 return requeue }.
 *   DrainRing    RingBuffer reader with a budget of BUDGET packets: interrupt_mask = 1; read
 *                packets (an acquire load of write_index for each) while the budget lasts;
 *                commit read_index (release, then a full fence); read pending_send_sz and
 *                signal the host if the commit moved the free space across it;
 *                interrupt_mask = 0 (then a full fence); re-read write_index: no data -> done;
 *                data and budget left -> mask and read again; data and budget used up ->
 *                "packets left" (OnEvent requeues).
 *   Control      ChannelTable P1 Publish (CAS null -> t), and only then OpenChannel. REUSE:
 *                at any moment ChannelTable R1 Retire (CAS t -> null, never blocks);
 *                CloseChannel and its answer; then a non-blocking Busy(R) check: ChannelTable
 *                R2 read the registered mask, ChannelTable R3 read each registered hazard
 *                (seq_cst). Nobody announces R -> free the object; otherwise the retire is
 *                deferred. Release R; the host re-offers R and object 2 is published into the
 *                same slot, possibly while a delivery to object 1 still runs; once object 2
 *                got its packets it is retired the same way; deferred objects are freed by the
 *                first later Busy(R) check that finds R unannounced (the control thread
 *                re-checks after the dispatcher it saw has moved on).
 *
 * spin explores every interleaving under sequential consistency: each step is one atomic
 * operation of the C++ (a step that reads two locations is two steps), and the C++ must give
 * the store-then-load pairs (K1/K4, G1/G4, D1-D2 against R1-R3, write_index/interrupt_mask,
 * read_index/pending_send_sz, events_ready against the page bit) the same outcomes with
 * seq_cst operations or full fences. For D1-D2 against R1-R3 the C++ puts the fence on the
 * reader's side: a seq_cst store per dispatch pass, a plain store per delivery, and a
 * process-wide barrier (membarrier) in a Busy check that finds a pass in progress
 * (core/data/channel_table.h, step 6 argues that this gives the same either-or).
 *
 * Checks:
 *   a) No use after free: every access of a dispatcher to an object's receive state or ring
 *      (OnEvent, the G flags, ring reads, commits, the mask, pending_send_sz) asserts that the
 *      object is alive; with REUSE the control thread frees objects while dispatchers run.
 *   b) No lost interrupt: the reader asserts that each packet it reads is the next one
 *      (exactly once, in order). At the end (timeout: no process can move) the host is done
 *      (no writer waits forever for room) and every packet of an object that stayed open was
 *      read. Without REUSE no event finds the slot empty (publish precedes OpenChannel).
 *   c) Relid reuse: the page bit carries which objects the host signalled (model-only
 *      bookkeeping), and a signal for object 2 is never delivered to object 1; all of object
 *      2's packets reach object 2 before it is retired; both objects end up freed.
 *
 * Scenarios are cpp defines (model_test.sh): the default is delivery (one object, published
 * at any moment relative to the VPs' start-up); REUSE adds retire, release, re-offer and
 * publish of object 2; MOVE lets the host signal either VP. Sizes: NVP, RAISERS0, N1, N2,
 * CAP, BUDGET. Planted bugs, each of which spin must find:
 *   BUG_NO_STARTUP_SCAN      Start sets events_ready but does not Raise
 *   BUG_K4_NO_RECHECK        Raise returns after K3 without the K4 re-check
 *   BUG_G4_NO_RECHECK        OnEvent returns after G3 without the G4 re-check
 *   BUG_NO_UNMASK_RECHECK    the reader unmasks and does not re-read write_index
 *   BUG_LEFT_BEFORE_UNMASK   budget used up: "packets left" is decided while still masked,
 *                            and the reader then unmasks without re-reading write_index
 *   BUG_NO_REQUEUE           budget used up with packets left, but the bit is not set again
 *   BUG_PENDING_NO_RECHECK   the host writer waits for a signal without re-reading read_index
 *                            after storing pending_send_sz
 *   BUG_OPEN_FIRST           OpenChannel is sent before Publish
 *   BUG_ANNOUNCE_AFTER_LOAD  Deliver stores its hazard after loading the slot
 *   BUG_FREE_WHEN_BUSY       the object is freed right after R1, without a Busy(R) check
 *   BUG_STALE_TARGET         the dispatcher loads the slot before it takes the bit
 * PROBE_CALLBACK_AFTER_RELEASE asserts that object 1 gets no packet callback once R was
 * released; spin refutes it: a delivery that loaded object 1 before R1 keeps draining its ring
 * after R1, after CloseChannel, after the release and after object 2 is published. That is
 * allowed by the design (the object is not freed while that delivery runs), but whatever the
 * receive callback uses must live until the deferred retire completes, not only until the
 * channel is closed.
 */

#ifndef NVP
#define NVP 2
#endif
#ifndef BUDGET
#define BUDGET 1
#endif
#ifndef CAP
#define CAP 2
#endif
#ifndef N1
#define N1 3          /* packets the host writes to object 1 */
#endif
#ifndef N2
#define N2 2          /* packets the host writes to object 2 (REUSE) */
#endif
#ifndef RAISERS0
#define RAISERS0 2    /* VP 0: Start and Doorbell threads (2) or one thread doing both (1) */
#endif
#define NOBJ 3        /* objects 1 and 2; index 0 is "no object" */

/* ---- per VP: event page bit, doorbell, EventDispatch, hazard ---- */
bit page[NVP];          /* R's bit in this VP's event page */
byte page_for[NVP];     /* model only: bit t set = the bit carries a signal for object t */
byte db[NVP];           /* doorbell counter */
bit ready[NVP];         /* EventDispatch events_ready */
bit pending[NVP];       /* EventDispatch pending */
bit dispatching[NVP];   /* EventDispatch dispatching */
bit hazard[NVP];        /* ChannelTable hazard[d] == R */
byte regmask = 0;       /* ChannelTable registered dispatchers (bit vp) */

/* ---- the channel table slot of R ---- */
byte slot = 0;

/* ---- per object ---- */
bit alive[NOBJ];        /* receive state and ring memory exist */
bit opened[NOBJ];       /* OpenChannel reached the host */
bit close_req[NOBJ];    /* CloseChannel reached the host */
bit close_ack[NOBJ];    /* the host answered it: it no longer touches the ring */
bit drain_pending[NOBJ];
bit draining[NOBJ];
byte wi[NOBJ];          /* ring write_index, in packets (no wrap needed: counts stay small) */
byte ri[NOBJ];          /* ring read_index (committed) */
byte priv[NOBJ];        /* the reader's private read position (IncomingRing state) */
bit mask[NOBJ];         /* ring interrupt_mask */
byte pend[NOBJ];        /* ring pending_send_sz, in packets (0 = none) */
bit host_sig[NOBJ];     /* the guest signalled the host (host event bit + host doorbell) */
byte buf[NOBJ * CAP];   /* packet sequence numbers in the ring's slots */
byte consumed[NOBJ];    /* packets the callback received */

bool host_done = false;
bool released = false;  /* REUSE: RelidReleased reached the host */
bool offered2 = false;  /* REUSE: the host offered R again (object 2) */

#define USE(t) assert(alive[t])

/* ---------------------------------------------------------------------------------------- */
/* Host side                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* Set R's bit in the chosen VP's page (release), ring its doorbell if the bit was clear. */
inline Signal(t) {
#ifdef MOVE
  select (vp : 0 .. NVP - 1);        /* the channel's target VP, as the host sees it now */
#else
  vp = 0;
#endif
  atomic { was = page[vp]; page[vp] = 1; page_for[vp] = page_for[vp] | (1 << t) };
  if
  :: !was -> db[vp]++
  :: was -> skip
  :: was -> db[vp]++         /* a host that rings every time */
  fi;
  vp = 0;
  was = 0
}

/* Write packet k to object t's ring (RingBuffer writer). Gives up if the channel closes. */
inline WritePacket(t, k) {
  do
  :: close_req[t] -> break
  :: else ->
     r = ri[t];                                       /* read_index: room? */
     if
     :: wi[t] - r >= CAP ->
        /* full: arm pending_send_sz (seq_cst store = full fence), re-read read_index */
        pend[t] = 1;
#ifndef BUG_PENDING_NO_RECHECK
        if
        :: wi[t] - ri[t] < CAP -> pend[t] = 0        /* room after all: retry */
        :: else ->
#endif
           if
           :: atomic { host_sig[t] -> host_sig[t] = 0 }; pend[t] = 0
           :: close_req[t] -> skip
           fi
#ifndef BUG_PENDING_NO_RECHECK
        fi
#endif
     :: else ->
        /* copy the packet, publish write_index (release; seq_cst store = full fence) */
        atomic { buf[t * CAP + wi[t] % CAP] = k; old = wi[t]; wi[t]++ };
        m = mask[t];                                  /* interrupt_mask */
        r = ri[t];                                    /* read_index: empty before? */
        if
        :: m == 0 && r == old -> Signal(t)
        :: else -> skip
        fi;
        m = 0;
        old = 0;
        break
     fi;
     r = 0
  od;
  r = 0
}

proctype Host() {
  byte k, r, old, vp;
  bit m, was;
  (opened[1]);
  k = 1;
  do
  :: close_req[1] -> break
  :: else ->
     if
     :: k <= N1 -> WritePacket(1, k); k++
     :: else -> break
     fi
  od;
#ifdef REUSE
  (close_req[1]);
  close_ack[1] = 1;                 /* the host no longer touches object 1's ring */
  (released);
  offered2 = true;                  /* offers R again */
  (opened[2]);
  k = 1;
  do
  :: k <= N2 -> WritePacket(2, k); k++
  :: else -> break
  od;
  host_done = true;
  (close_req[2]);
  close_ack[2] = 1
#else
  host_done = true
#endif
}

/* ---------------------------------------------------------------------------------------- */
/* Guest side: ring reader, Channel drain hand-off, ChannelTable delivery, EventDispatch      */
/* ---------------------------------------------------------------------------------------- */

/* RingBuffer reader protocol with a budget. Sets `left` when the budget ran out with packets
 * still in the ring. */
inline DrainRing(t) {
  atomic { USE(t); n = 0; left = 0; mask[t] = 1 };                /* interrupt_mask = 1 */
  do
  :: do                                                            /* read packets */
     :: atomic { n < BUDGET && wi[t] != priv[t] ->                 /* acquire write_index */
          USE(t);
          assert(buf[t * CAP + priv[t] % CAP] == consumed[t] + 1); /* in order, exactly once */
#ifdef PROBE_CALLBACK_AFTER_RELEASE
          assert(!(t == 1 && released));      /* fails: see the header */
#endif
          consumed[t]++;
          priv[t]++;
          n++ }
     :: atomic { (n >= BUDGET || wi[t] == priv[t]) -> USE(t) }; break
     od;
     if                                                            /* commit read_index */
     :: atomic { priv[t] != ri[t] -> USE(t); oldri = ri[t]; ri[t] = priv[t] };
        atomic { USE(t); p = pend[t] };                            /* fence; pending_send_sz */
        if
        :: p != 0 ->
           atomic { USE(t); w = wi[t] };
           /* free_after = CAP - (w - priv), freed = priv - oldri */
           if
           :: (CAP - (w - priv[t])) >= (priv[t] - oldri) &&
              (CAP - (w - priv[t])) - (priv[t] - oldri) < p &&
              (CAP - (w - priv[t])) >= p -> host_sig[t] = 1
           :: else -> skip
           fi
        :: else -> skip
        fi;
        atomic { oldri = 0; p = 0; w = 0 }
     :: atomic { priv[t] == ri[t] -> USE(t) }                    /* nothing to commit */
     fi;
#if defined(BUG_LEFT_BEFORE_UNMASK)
     if
     :: n >= BUDGET ->
        atomic { USE(t); left = (wi[t] != priv[t]) };              /* still masked */
        atomic { USE(t); mask[t] = 0 };
        break
     :: else -> skip
     fi;
#endif
     atomic { USE(t); mask[t] = 0 };                               /* unmask, full fence */
#ifdef BUG_NO_UNMASK_RECHECK
     left = (n >= BUDGET);
     break
#else
     if                                                            /* re-read write_index */
     :: atomic { wi[t] != priv[t] -> USE(t) };
        if
        :: n < BUDGET -> atomic { USE(t); mask[t] = 1 }            /* mask, read again */
        :: else -> left = 1; break                                 /* packets left */
        fi
     :: atomic { wi[t] == priv[t] -> USE(t) }; break
     fi
#endif
  od;
  n = 0
}

/* Channel::OnEvent in callback mode: the G hand-off. Result in rq (requeue). */
inline OnEvent(t) {
  atomic { USE(t); rq = 0; drain_pending[t] = 1 };                /* Channel G1 */
  do
  :: atomic { USE(t); ok = (draining[t] == 0); if :: ok -> draining[t] = 1 :: else -> skip fi };
     if                                                            /* Channel G2 */
     :: !ok -> rq = 0; break                                       /* return false */
     :: else ->
        do
        :: atomic { USE(t); ok = drain_pending[t]; drain_pending[t] = 0 };
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
        atomic { USE(t); draining[t] = 0 };                        /* Channel G3 */
#ifdef BUG_G4_NO_RECHECK
        break
#else
        atomic { USE(t); ok = drain_pending[t] };                  /* Channel G4 */
        if
        :: !ok -> break
        :: else -> skip
        fi
#endif
     fi
  od;
  ok = 0
}

/* ChannelTable::Dispatcher::Deliver for R, by VP vp: the hazard and the slot load. */
inline LoadTarget(vp) {
#ifdef BUG_ANNOUNCE_AFTER_LOAD
  t = slot;
  hazard[vp] = 1;
#else
  hazard[vp] = 1;                                                  /* ChannelTable D1 */
  t = slot;                                                        /* ChannelTable D2 */
#endif
}

/* The rest of Deliver: OnEvent on the loaded target, requeue, leave. */
inline DeliverLoaded(vp) {
  assert(!((tags >> 2) & 1) || t != 1);    /* a signal for object 2 never reaches object 1 */
  if
  :: t != 0 ->
     OnEvent(t);
#ifndef BUG_NO_REQUEUE
     if
     :: rq ->                                         /* requeue: bit again, another pass */
        atomic { page[vp] = 1; page_for[vp] = page_for[vp] | (1 << t) };
        pending[vp] = 1
     :: else -> skip
     fi;
#endif
     rq = 0
  :: else ->                                                       /* spurious */
#ifndef REUSE
     assert(t != 0)            /* published before OpenChannel: no signal finds it empty */
#else
     skip
#endif
  fi;
  atomic { hazard[vp] = 0; t = 0; tags = 0 }                       /* ChannelTable D3 */
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
#ifdef BUG_STALE_TARGET
              LoadTarget(vp);                     /* the slot loaded before the bit is taken */
              if
              :: atomic { page[vp] == 1 -> page[vp] = 0; tags = page_for[vp]; page_for[vp] = 0 };
                 DeliverLoaded(vp)
              :: else -> atomic { hazard[vp] = 0; t = 0 }
              fi
#else
              if                                                   /* EventPage S1 */
              :: atomic { page[vp] == 1 -> page[vp] = 0; tags = page_for[vp]; page_for[vp] = 0 };
                 LoadTarget(vp);
                 DeliverLoaded(vp)
              :: else -> skip
              fi
#endif
           :: else -> break
           od;
           dispatching[vp] = 0;                                    /* EventDispatch K3 */
#ifdef BUG_K4_NO_RECHECK
           break
#else
           if                                                      /* EventDispatch K4 */
           :: pending[vp] == 0 -> break
           :: else -> skip
           fi
#endif
        fi
     od;
     ok = 0
  fi
}

proctype Doorbell(byte vp) {
  byte seen, t, tags, n, oldri, p, w;
  bit ok, rq, left;
  seen = db[vp];
  Raise(vp);
end_wait:
  do
  :: db[vp] != seen ->                   /* the futex wait returns */
     seen = db[vp];                      /* re-read the counter */
     Raise(vp)
  od
}

proctype Start(byte vp) {
  byte t, tags, n, oldri, p, w;
  bit ok, rq, left;
  regmask = regmask | (1 << vp);         /* register the dispatcher */
  ready[vp] = 1;                         /* events_ready (after the page is attached) */
#ifndef BUG_NO_STARTUP_SCAN
  Raise(vp)                              /* the start-up pass */
#endif
}

/* A VP whose doorbell thread starts it (one raiser: keeps the second VP cheap). */
proctype StartAndDoorbell(byte vp) {
  byte seen, t, tags, n, oldri, p, w;
  bit ok, rq, left;
  regmask = regmask | (1 << vp);
  ready[vp] = 1;
  seen = db[vp];
  Raise(vp);
end_wait:
  do
  :: db[vp] != seen ->
     seen = db[vp];
     Raise(vp)
  od
}

/* ---------------------------------------------------------------------------------------- */
/* Control thread                                                                            */
/* ---------------------------------------------------------------------------------------- */

inline Publish(t) {
  alive[t] = 1;
#ifdef BUG_OPEN_FIRST
  opened[t] = 1;
  atomic { assert(slot == 0); slot = t };
#else
  atomic { assert(slot == 0); slot = t };                          /* ChannelTable P1 */
  opened[t] = 1                                                    /* then OpenChannel */
#endif
}

/* Busy(R): does a registered dispatcher announce R? Result in busy; bi = the one found. */
inline BusyCheck() {
  i = 0;
  busy = 0;
  regs = regmask;                                                  /* ChannelTable R2 */
  do
  :: i < NVP ->
     if
     :: ((regs >> i) & 1) && hazard[i] -> busy = 1; bi = i; break  /* ChannelTable R3 */
     :: else -> i++
     fi
  :: else -> break
  od;
  i = 0;
  regs = 0
}

/* Retire object t: ChannelTable R1, close, first Busy check: free now or defer. */
inline Retire(t) {
  atomic { assert(slot == t); slot = 0 };                          /* ChannelTable R1 */
  close_req[t] = 1;                                                /* CloseChannel */
  (close_ack[t]);
#ifdef BUG_FREE_WHEN_BUSY
  alive[t] = 0
#else
  BusyCheck();
  if
  :: !busy -> alive[t] = 0
  :: else -> deferred = deferred | (1 << t)
  fi;
  busy = 0;
  bi = 0
#endif
}

proctype Control() {
  byte i, regs, bi, deferred;
  bit busy;
  Publish(1);
#ifdef REUSE
  Retire(1);                            /* at any moment: deliveries may be in progress */
  released = true;                      /* RelidReleased; object 1 may still be deferred */
  (offered2);
  Publish(2);                           /* same slot, possibly while object 1 is in use */
  (consumed[2] == N2);                  /* the driver got all its packets, then closes */
  Retire(2);
  do                                    /* re-check deferred retires */
  :: deferred != 0 ->
     BusyCheck();
     if
     :: !busy -> alive[1] = 0; alive[2] = 0; deferred = 0
     :: else -> (hazard[bi] == 0)       /* re-check once that dispatcher has moved on */
     fi;
     busy = 0;
     bi = 0
  :: else -> break
  od
#endif
}

/* At the end (no process can move): the host is done and nothing was lost or leaked. */
proctype Checker() {
  timeout ->
  assert(host_done);
#ifdef REUSE
  assert(close_ack[2] && consumed[2] == N2 && ri[2] == wi[2]);
  assert(alive[1] == 0 && alive[2] == 0)
#else
  assert(consumed[1] == N1 && ri[1] == N1 && wi[1] == N1)
#endif
}

init {
  byte v = 0;
  atomic {
    run Control();
    run Host();
#if RAISERS0 == 1
    run StartAndDoorbell(0);
#else
    run Start(0);
    run Doorbell(0);
#endif
    v = 1;
    do
    :: v < NVP -> run StartAndDoorbell(v); v++
    :: else -> break
    od;
    run Checker()
  }
}
