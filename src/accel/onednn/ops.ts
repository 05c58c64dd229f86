/**
 * The codes the addon's functions take as plain numbers: mirrors of the enums in accel/onednn/src/common.h, name for
 * name (C++ `kSquaredDiff` is `SquaredDiff` here) and value for value. tests/accel-op-codes.test.ts fails when the
 * two disagree, so change them together.
 */

/** binary(op, ...): y = a (op) b. */
export const BinaryOp = { Add: 0, Sub: 1, Mul: 2, Div: 3, SquaredDiff: 4 } as const;
export type BinaryOp = (typeof BinaryOp)[keyof typeof BinaryOp];

/** unary(op, ...): y = op(x); Step uses alpha below zero. */
export const UnaryOp = { Relu: 0, Step: 1, Sqrt: 2, Square: 3, Rsqrt: 4, Neg: 5, Floor: 6 } as const;
export type UnaryOp = (typeof UnaryOp)[keyof typeof UnaryOp];

/** How an operand of binary() maps onto the output, which the addon walks as blocks of `inner` elements. */
export const Broadcast = {
  Full: 0,
  /** The operand repeats once per block of `inner` output elements (e.g. [C] against [N,H,W,C]). */
  PerElementOfBlock: 1,
  /** One operand value per block (e.g. [N,1] against [N,C]). */
  PerBlock: 2,
  Scalar: 3,
} as const;
export type Broadcast = (typeof Broadcast)[keyof typeof Broadcast];

/** The activation convForward and matMul fuse into their output. */
export const Activation = { None: 0, Relu: 1 } as const;
export type Activation = (typeof Activation)[keyof typeof Activation];

/** sum(): LeadingRows: y[j] = sum over rows r of x[r, j]; Trailing: y[o] = sum over j of x[o, j]. */
export const SumMode = { LeadingRows: 0, Trailing: 1 } as const;
export type SumMode = (typeof SumMode)[keyof typeof SumMode];

/** Every enum above by its C++ name, for the test that compares them with common.h. */
export const OP_CODES = { BinaryOp, UnaryOp, Broadcast, Activation, SumMode } as const;
