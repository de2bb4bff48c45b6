//! entente-arbiter as a library.
