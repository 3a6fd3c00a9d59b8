//! The GraphStore trait and its embedded Grafeo backend
