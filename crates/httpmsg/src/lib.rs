//! httpmsg
