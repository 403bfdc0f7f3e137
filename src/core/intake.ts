// What receives a download (xapi/host.ts): it takes each piece as it comes off the socket, says
// when to stop reading, and checks the whole at the end. xva/intake.ts's CheckedIntake is the one
// there is, over a format's Verifier.

export interface Intake<R> {
  /** Bytes taken so far. */
  readonly bytes: number
  /** Takes a piece, valid only during the call; false: stop reading until the intake wakes the reader. */
  push(piece: Buffer): boolean
  /** After the last piece: the checked result (the file written and flushed). Throws when incomplete. */
  finish(): Promise<R>
  /** Stops after a failure; never throws. */
  abort(): Promise<void>
}
