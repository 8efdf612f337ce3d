"""int8 quantization: qparam math, observers, calibration, calibration tables and Q/DQ insertion."""
