//! Integration tests of sunray; the binaries here are the processes they start.
