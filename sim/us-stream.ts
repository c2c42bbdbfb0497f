// The simulated scanner as a frame stream: robot states in, tracked B-mode frames out.
//
// The frame clock is the robot's own clock (state.tMs): a state that falls on or after the next
// slot of the 1/fps grid gets a frame, rendered at that state's pose and stamped with its time.
// No timer inside, so it runs the same in virtual time (TestScheduler) and in real time.
//
// Rendering is synchronous (≈ 5 ms per frame): pass a scheduler to take it out of the state's
// emission when the control loop shares the thread.
import { defer, filter, map, observeOn, type Observable, type SchedulerLike } from 'rxjs';
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
    return (scheduler === undefined ? due$ : due$.pipe(observeOn(scheduler))).pipe(map((s) => simulator.render(s.tcpPose, s.tMs)));
  });
}
