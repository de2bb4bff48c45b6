//! Enforcement backends: apply a decided allocation to a cgroup or a container.
