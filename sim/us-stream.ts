// The simulated scanner as a frame stream: robot states in, tracked B-mode frames out.
//
// The frame clock is the robot's own clock (state.tMs): a state that falls on or after the next
// slot of the 1/fps grid gets a frame, rendered at that state's pose and stamped with its time.
// No timer inside, so it runs the same in virtual time (TestScheduler) and in real time.
//
// Rendering is synchronous (≈ 5 ms per frame): pass a scheduler to take it out of the state's
// emission when the control loop shares the thread.
import { asyncScheduler, catchError, concat, defer, EMPTY, filter, from, ignoreElements, map, mergeMap, Observable, of, timer, type SchedulerAction, type SchedulerLike } from 'rxjs';
import { concatMapDropOldest } from '../streamer/pipeline.ts';
import type { TrackedFrame } from '../protocols/imaging.ts';
import type { Pose, RobotState } from '../protocols/robot.ts';
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
 * As ultrasoundFrames$, but `render` runs elsewhere (sim/worker-render.ts: a worker thread), so
 * this thread only receives finished frames. One render in flight and one due state waiting
 * (the latest wins): a slow renderer gives fewer frames, never a queue. And at most half a core:
 * after a render that took d ms (measured in the worker: a loaded machine stretches the round
 * trip, not the render) the next starts d ms later at the earliest. A render costs 5 ms
 * on a fast machine and 40 ms on a slow one; unbounded, the worker took a whole core at 30 fps,
 * and on a 2-core machine the robot's control loop, the streamer and the browsers starved (the
 * sweep's state watchdog aborted scans). A failed render (a bad pose, a stuck worker) drops that
 * frame and goes to `onError`; the stream goes on.
 */
export function workerUltrasoundFrames$(
  render: (pose: Pose, tMs: number) => Promise<{ readonly frame: TrackedFrame; readonly renderMs: number }>,
  states$: Observable<RobotState>,
  fps = 30,
  onError: (err: unknown) => void = () => undefined,
  scheduler: SchedulerLike = asyncScheduler,
): Observable<TrackedFrame> {
  new FrameClock(fps); // a bad fps throws here, at the call
  return defer(() => {
    const clock = new FrameClock(fps);
    return states$.pipe(
      filter((s) => clock.due(s.tMs)),
      concatMapDropOldest(1, (s) =>
        from(render(s.tcpPose, s.tMs)).pipe(
          // The frame goes out at once; the next render waits as long as this one took.
          mergeMap((r) => concat(of(r.frame), timer(r.renderMs, scheduler).pipe(ignoreElements()))),
          catchError((err: unknown) => {
            onError(err);
            return EMPTY;
          }),
        ),
      ),
    );
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
  return due$.pipe(
    concatMapDropOldest(1, (s) =>
      new Observable<TrackedFrame>((sub) =>
        scheduler.schedule(function (this: SchedulerAction<unknown>, rendered) {
          // Second run: the render's own length has passed; the next may start.
          if (rendered === true) return sub.complete();
          const t0 = scheduler.now();
          try {
            sub.next(render(s));
          } catch (err) {
            sub.error(err);
            return;
          }
          this.schedule(true, scheduler.now() - t0);
        }),
      ),
    ),
  );
}
