# The checkpoint hook of every shipped config: mmengine's CheckpointHook (same
# arguments, same schedule) whose saves survive a kill, Ctrl-C or a full disk.
# It writes each checkpoint and `last_checkpoint` to a temporary file, fsyncs
# it and renames it into place, and removes outdated checkpoints only then
# (mmspatial/engine/hooks/atomic_checkpoint_hook.py). A config takes it with
#
#   _base_ = [..., '../_base_/crash_safe_checkpoint.py']
#   default_hooks = dict(checkpoint=_base_.crash_safe_checkpoint)
#
# which keeps the interval and the other settings of the inherited hook.
# (mmengine allows no key twice among one config's bases, so this base cannot
# set default_hooks itself next to the mm library's base that does.)
crash_safe_checkpoint = dict(type='AtomicCheckpointHook')
