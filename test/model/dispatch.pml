/*
 * Event dispatch, modelled for spin: the steps of the ordering argument in
 * core/channel_table.h, with one channel (relid), its event bit, a host that signals it,
 * NDISP dispatchers and the control thread that publishes and retires the channel.
 *
 *   control:    [P1] publish slot; send OpenChannel; ... ; [R1] clear slot;
 *               [R3]/[R4] wait until each dispatcher that was inside a section has left;
 *               free the channel object
 *   host:       wait for OpenChannel; repeat NSIG times: post work, set the event bit
 *   dispatcher: [D0] enter (sequence odd); [S1] test-and-clear the bit; [D2] load the slot;
 *               use the object (OnEvent: take all posted work) or count a spurious event;
 *               [D3] leave (sequence even)
 *
 * spin explores every interleaving under sequential consistency; the C++ code gets the same
 * interleavings from its seq_cst / acquire-release operations (argued at each atomic and
 * checked by the TSan stress test). Scenarios (cpp defines, see model_test.sh):
 *   default           delivery: no retire; once the host is done and the bit is clear with no
 *                     dispatcher inside a section, all posted work was taken and no event was
 *                     spurious (publish happens before open, so no signal finds an empty slot)
 *   RETIRE            the control thread retires and frees the channel while the host is still
 *                     signalling: no dispatcher ever touches the freed object
 *   BUG_OPEN_FIRST    sends OpenChannel before publishing: the delivery check must fail
 *   BUG_NO_WAIT       frees without the quiescent wait: the use-after-free check must fail
 */

#ifndef NDISP
#define NDISP 2
#endif
#ifndef NSIG
#define NSIG 2
#endif

bit slot = 0;          /* the table slot holds the channel pointer */
bit alive = 0;         /* the channel object exists */
bit event_bit = 0;     /* the relid's bit in the event page */
bool opened = false;   /* OpenChannel reached the host */
bool host_done = false;
byte posted = 0;       /* work the host posted that no OnEvent took yet */
byte taken = 0;        /* work taken by OnEvent calls */
byte spurious = 0;
byte seq[NDISP];       /* dispatcher sequence counters: odd = inside a dispatch section */
byte dispatchers_done = 0;

proctype Control() {
  alive = 1;
#ifdef BUG_OPEN_FIRST
  opened = true;
  slot = 1;
#else
  slot = 1;            /* [P1] publish ... */
  opened = true;       /* ... then send OpenChannel */
#endif
#ifdef RETIRE
  byte i = 0;
  byte snapshot;
  slot = 0;            /* [R1] */
#ifndef BUG_NO_WAIT
  do
  :: i < NDISP ->
       snapshot = seq[i];                    /* [R3] */
       if
       :: snapshot % 2 == 1 -> (seq[i] != snapshot)   /* [R4] wait for it to leave */
       :: else -> skip
       fi;
       i++
  :: else -> break
  od;
#endif
  alive = 0            /* free the channel */
#endif
}

proctype Host() {
  byte k = 0;
  (opened);
  do
  :: k < NSIG ->
       posted++;                              /* write the ring ... */
       event_bit = 1;                         /* ... then set the bit [E1] */
       k++
  :: else -> break
  od;
  host_done = true
}

proctype Dispatcher(byte id) {
  bit got;
  bit target;
  do
  :: event_bit == 1 ->                        /* the interrupt */
       seq[id]++;                             /* [D0] enter */
       atomic { got = event_bit; event_bit = 0 };   /* [S1] test-and-clear */
       if
       :: got ->
            target = slot;                    /* [D2] */
            if
            :: target ->
                 assert(alive);               /* OnEvent on a live object */
                 atomic { taken = taken + posted; posted = 0 };
                 assert(alive)
            :: else -> spurious++
            fi
       :: else -> skip
       fi;
       seq[id]++                              /* [D3] leave */
  :: host_done && event_bit == 0 -> break
  od;
  dispatchers_done++
}

#ifndef RETIRE
/* Delivery check: quiescent and nothing pending means every posted unit was taken. */
proctype Checker() {
  byte i;
  (host_done && event_bit == 0 && dispatchers_done == NDISP);
  assert(posted == 0 && taken == NSIG && spurious == 0)
}
#endif

init {
  byte i = 0;
  atomic {
    run Control();
    run Host();
    do
    :: i < NDISP -> run Dispatcher(i); i++
    :: else -> break
    od;
#ifndef RETIRE
    run Checker()
#endif
  }
}
