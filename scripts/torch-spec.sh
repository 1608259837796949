# The torch build vlab installs and locks, read by setup.sh and lock.sh (sourced, not run).
# A CUDA build that also runs on CPU: one environment serves a laptop, CI and a GPU node;
# torchvision is needed by timm (EVA-02, the paper's vision encoder).
VLAB_LOCKED_TORCH="torch==2.14.1 torchvision==0.29.1"
