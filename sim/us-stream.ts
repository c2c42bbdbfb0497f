// The simulated scanner as a frame stream: robot states in, tracked B-mode frames out.
//
// The frame clock is the robot's own clock (state.tMs): a state that falls on or after the next
// slot of the 1/fps grid gets a frame, rendered at that state's pose and stamped with its time.
// No timer inside, so it runs the same in virtual time (TestScheduler) and in real time.
//
// Rendering is synchronous (≈ 5 ms per frame): pass a scheduler to take it out of the state's
// emission when the control loop shares the thread.
import { defer, filter, map, Observable, type SchedulerLike, type Subscription } from 'rxjs';
import type { TrackedFrame } from '../protocols/imaging.ts';
import type { RobotState } from '../protocols/robot.ts';
import { FrameClock, type UltrasoundSimulator } from './ultrasound.ts';

/**
 * Cold: each subscription gets its own frame clock. Errors from render (a non-finite pose)
 * propagate. With a `scheduler` (e.g. asyncScheduler), each due state is rendered in a task of
 * its own instead of inside the state's emission, so the robot's other state subscribers (the
 * safety supervisor) and its step timer never wait for a render.
 */
export function ultrasoundFrames$(
  simulator: UltrasoundSimulator,
  states$: Observable<RobotState>,
  fps = 30,
  scheduler?: SchedulerLike,
): Observable<TrackedFrame> {
  new FrameClock(fps); // a bad fps throws here, at the call, not later at subscription
  return defer(() => {
    const clock = new FrameClock(fps);
    const due$ = states$.pipe(filter((s) => clock.due(s.tMs)));
    if (scheduler === undefined) return due$.pipe(map((s) => simulator.render(s.tcpPose, s.tMs)));
    return rendered$(due$, (s) => simulator.render(s.tcpPose, s.tMs), scheduler);
  });
}

/**
 * Renders due states in tasks of their own, never more than one waiting (the latest wins) and
 * never more than half the thread's time: after a render of d ms the next starts d ms later at
 * the earliest. A render costs 5 ms on a fast machine and 40 ms on a slow one; at 30 fps the
 * queued tasks of a plain observeOn then outgrew the thread and starved the robot's control loop
 * (its state watchdog aborted sweeps). A slow machine gets fewer frames instead.
 */
function rendered$(due$: Observable<RobotState>, render: (s: RobotState) => TrackedFrame, scheduler: SchedulerLike): Observable<TrackedFrame> {
  return new Observable<TrackedFrame>((sub) => {
    let waiting: RobotState | null = null;
    let scheduled = false;
    let action: Subscription | null = null;
    let nextStartMs = -Infinity;
    const run = (): void => {
      scheduled = false;
      const s = waiting;
      waiting = null;
      if (s === null || sub.closed) return;
      const t0 = scheduler.now();
      let frame: TrackedFrame;
      try {
        frame = render(s);
      } catch (err) {
        sub.error(err);
        return;
      }
      const t1 = scheduler.now();
      nextStartMs = t1 + (t1 - t0);
      sub.next(frame);
    };
    const inner = due$.subscribe({
      next: (s) => {
        waiting = s;
        if (scheduled) return;
        scheduled = true;
        action = scheduler.schedule(run, Math.max(0, nextStartMs - scheduler.now()));
      },
      error: (err: unknown) => sub.error(err),
      complete: () => {
        // A frame still waiting is rendered before the stream ends, as with observeOn.
        if (!scheduled) sub.complete();
        else action = scheduler.schedule(() => (run(), sub.complete()), Math.max(0, nextStartMs - scheduler.now()));
      },
    });
    return () => {
      inner.unsubscribe();
      action?.unsubscribe();
    };
  });
}
