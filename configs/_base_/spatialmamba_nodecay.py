# Opt-in optimizer setting, NOT the reference's: no weight decay for any
# normalisation layer of Spatial-Mamba nor for the SSM's decay rates and skip
# gains. The shipped detection and segmentation configs keep the reference's
# Swin custom_keys (decay_mult 0 only for names containing "norm"), which the
# published numbers were obtained with; that setting still decays the block
# LayerNorms ln_1 / ln_2 and the SSM parameters A_logs / Ds.
#
# Use it from a config of your own that inherits a shipped one, e.g.
#
#   _base_ = ['../detection/maskrcnn_spatialmamba_t.py',
#             '../_base_/spatialmamba_nodecay.py']
#   optim_wrapper = dict(paramwise_cfg=_base_.spatialmamba_nodecay)
#
# The keys are added to the inherited custom_keys (mmengine matches them as
# substrings of the full parameter names; the longest matching key wins).
spatialmamba_nodecay = dict(
    custom_keys={
        'norm': dict(decay_mult=0.),  # outnorm{i}, out_norm, *.norm (BN)
        'ln_1': dict(decay_mult=0.),
        'ln_2': dict(decay_mult=0.),
        'A_logs': dict(decay_mult=0.),
        'Ds': dict(decay_mult=0.),
    })
