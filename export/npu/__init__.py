"""The npu-qnn target: a static-shape QDQ graph pair for the Qualcomm HTP (QNN EP); see pipeline.py."""
