"""``ipm train``: the Decoupled ESC recipe with TRL. SP on strategy_sft then strategy_pairs, RG on response_sft
then response_pairs, the joint baseline VM on joint_sft then joint_pairs; then ``ipm eval`` on test turns."""
