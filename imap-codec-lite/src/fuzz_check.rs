//! Checks shared by the fuzz targets and the corpus replay test. Not API.
