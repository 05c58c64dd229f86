/** The `native` backend itself: tfjs's CPU backend under its own name, recycling the addon's output buffers. */
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { isPooled, releaseNativePool, trackView } from './buffers';

export const NATIVE_BACKEND = 'native';
/** Above wasm (2) and cpu (1): once registered it is the fastest backend in this process. */
export const NATIVE_PRIORITY = 3;

type DataId = Parameters<MathBackendCPU['readSync']>[0];
type BackendValues = Parameters<MathBackendCPU['write']>[0];

/**
 * The CPU backend under its own name, so `tf.getBackend()` reports 'native', plus the
 * bookkeeping that lets the addon's output buffers be recycled (see uninitialised()).
 */
export class NativeBackend extends MathBackendCPU {
  constructor() {
    super();
    // The CPU backend's first write advises installing tfjs-node; this backend is the answer to that.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  override write(values: BackendValues, shape: number[], dtype: tf.DataType): DataId {
    const id = super.write(values, shape, dtype);
    trackView(values, 1);
    return id;
  }

  override move(dataId: DataId, values: BackendValues, shape: number[], dtype: tf.DataType, refCount: number): void {
    const previous = this.data.has(dataId) ? this.data.get(dataId).values : undefined;
    super.move(dataId, values, shape, dtype, refCount);
    trackView(values, 1);
    trackView(previous, -1);
  }

  override disposeData(dataId: DataId, force = false): boolean {
    const values = this.data.has(dataId) ? this.data.get(dataId).values : undefined;
    const gone = super.disposeData(dataId, force);
    if (gone && values !== undefined && !this.data.has(dataId)) trackView(values, -1);
    return gone;
  }

  override readSync(dataId: DataId): BackendValues {
    const v = super.readSync(dataId);
    return isPooled(v) ? v.slice() : v;
  }

  override dispose(): void {
    super.dispose();
    releaseNativePool();
  }
}
