// The simulated scanner as a frame stream: robot states in, tracked B-mode frames out.
//
// The frame clock is the robot's own clock (state.tMs): a state that falls on or after the next
// slot of the 1/fps grid gets a frame, rendered at that state's pose and stamped with its time.
// No timer inside, so it runs the same in virtual time (TestScheduler) and in real time.
//
// ultrasoundFrames$ renders synchronously inside the state's emission (tests, offline tools);
// the server renders in a worker thread (workerUltrasoundFrames$), never on the control loop.
import { asyncScheduler, catchError, concat, defer, EMPTY, filter, from, ignoreElements, map, mergeMap, Observable, of, timer, type SchedulerLike } from 'rxjs';
import { concatMapDropOldest } from '../streamer/pipeline.ts';
import type { TrackedFrame } from '../protocols/imaging.ts';
import type { Pose, RobotState } from '../protocols/robot.ts';
import { FrameClock, type UltrasoundSimulator } from './ultrasound.ts';

/** Cold: each subscription gets its own frame clock. Errors from render (a non-finite pose) propagate. */
export function ultrasoundFrames$(simulator: UltrasoundSimulator, states$: Observable<RobotState>, fps = 30): Observable<TrackedFrame> {
  new FrameClock(fps); // a bad fps throws here, at the call, not later at subscription
  return defer(() => {
    const clock = new FrameClock(fps);
    return states$.pipe(
      filter((s) => clock.due(s.tMs)),
      map((s) => simulator.render(s.tcpPose, s.tMs)),
    );
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
