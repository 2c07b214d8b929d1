"""Deploy floor: ONNX export, int8 quantisation and serving of a trained student."""
