// The simulated scanner as a frame stream: robot states in, tracked B-mode frames out.
//
// The frame clock is the robot's own clock (state.tMs): a state that falls on or after the next
// slot of the 1/fps grid gets a frame, rendered at that state's pose and stamped with its time.
// No timer inside, so it runs the same in virtual time (TestScheduler) and in real time.
//
// Rendering is synchronous (≈ 5 ms per frame). A subscriber that shares a thread with the control
// loop should move it off the loop (observeOn(asyncScheduler)) — the streamer decides that.
import { defer, filter, map, type Observable } from 'rxjs';
import type { TrackedFrame } from '../protocols/imaging.ts';
import type { RobotState } from '../protocols/robot.ts';
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
