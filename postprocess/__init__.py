"""svlora.postprocess: the lighter paths after SenseVoice. Rules (hand-written or fitted
emotion offsets) rewrite a clip's decoded tags and words, with no training."""

from svlora.postprocess.cascade import Cascade, cascade_identity, load_cascade, train_cascade
from svlora.postprocess.fit import fit_offsets, fit_rules, fit_rules_file, mine_confusions
from svlora.postprocess.results import result_with_cascade, result_with_rules, results_with_cascade
from svlora.postprocess.rules import RuleSet, apply_rules, load_rules

__all__ = ["Cascade", "cascade_identity", "load_cascade", "train_cascade", "RuleSet", "apply_rules", "fit_offsets",
           "fit_rules", "fit_rules_file", "load_rules", "mine_confusions", "result_with_cascade",
           "results_with_cascade", "result_with_rules"]
