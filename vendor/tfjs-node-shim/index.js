// danfojs-node requires '@tensorflow/tfjs-node' only for tensors; the project's tfjs serves it.
module.exports = require('@tensorflow/tfjs');
