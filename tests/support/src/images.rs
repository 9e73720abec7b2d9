//! Test images (placeholder until the image work lands).
