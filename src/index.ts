// m1ts public API: the layers of the system, for use from Node.js.
export type { Backend } from './backend/backend.js';
export type { Tensor, DType } from './backend/tensor.js';
export { CpuBackend } from './backend/cpu/index.js';
export { createBackend, BACKEND_NAMES } from './backend/registry.js';
export { CausalLM, layerKinds, modelParamSpecs, type ModelConfig, type Arch } from './model/model.js';
export { loadModel, loadModelConfig, initModel, initWeights, saveWeights, writeConfigs, validateConfigs } from './model/checkpoint.js';
export { convertToHybrid } from './model/convert.js';
export { scoreLogprobs } from './model/logprobs.js';
export { PRESETS, findPreset } from './model/presets.js';
export { Tokenizer, StreamDecoder } from './model/tokenizer.js';
export { SafetensorsReader, writeSafetensors } from './io/safetensors.js';
export { plainSeqInfo, type SeqInfo, type DecodeInfo, type LayerState } from './model/module.js';
export { UserError, ConfigError, CheckpointError } from './util/errors.js';
