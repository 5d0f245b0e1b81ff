"""`svlora rules` (fit, check) and `svlora cascade train`: the lighter paths."""

from __future__ import annotations

from svlora.cli.common import add_stage1_args


def register(commands) -> None:
    rules = commands.add_parser("rules", help="post-processing rules: fit offsets, check a file")
    rule_actions = rules.add_subparsers(dest="rules_action", required=True)
    fit = rule_actions.add_parser("fit", help="fit emotion offsets and mine confusions on labelled clips")
    add_stage1_args(fit, "a labelled manifest (validation split)", "the rules file to write (YAML)")
    fit.add_argument("--terms", metavar="TERMS.txt", help="mine misrecognitions of these terms "
                     "(default: of every word of en clips)")
    fit.add_argument("--terms-out", metavar="TERMS.txt",
                     help="write the terms most often misrecognised (a --hotwords list)")
    check_rules = rule_actions.add_parser("check", help="validate a rules file")
    check_rules.add_argument("rules_file")
    check_rules.add_argument("--labels", help="the label schema its names are read in (labels.json "
                             "or YAML; default SenseVoice's)")
    rules.set_defaults(handler=run_rules)

    cascade = commands.add_parser("cascade", help="a light emotion classifier after stage 1")
    cascade_actions = cascade.add_subparsers(dest="cascade_action", required=True)
    ctrain = cascade_actions.add_parser("train", help="train a cascade on stage 1's outputs")
    add_stage1_args(ctrain, "labelled training manifest", "the cascade directory to write")
    ctrain.add_argument("--val", required=True, help="labelled validation manifest (best epoch)")
    ctrain.add_argument("--text", default="hashed", help="text branch: hashed (character n-grams), "
                        "none, or a Hugging Face sequence-classification model dir (frozen)")
    ctrain.add_argument("--hidden", type=int, default=64, help="hidden units (0: logistic)")
    ctrain.add_argument("--cache-dir", help="stage-1 outputs cache (default: .stage1-cache beside --out)")
    cascade.set_defaults(handler=run_cascade)


def run_rules(args) -> None:
    from svlora.postprocess import load_rules
    from svlora.recipes.rules import rules_path

    if args.rules_action == "check":
        from svlora.label_schema import DEFAULT_SCHEMA, load_schema

        labels = load_schema(args.labels) if args.labels else DEFAULT_SCHEMA
        rules = load_rules(rules_path(args.rules_file), labels)
        print(f"{args.rules_file}: {len(rules.rules)} rule(s), offsets for "
              f"{', '.join(rules.emotion_offsets) or 'no emotion'}: valid")
        return
    from svlora.postprocess import fit_rules_file

    content = fit_rules_file(args.model, args.data, args.out, adapter=args.adapter,
                             device=args.device, hub=args.hub,
                             allow_base_mismatch=args.allow_base_mismatch,
                             ban_emo_unknown=args.ban_emo_unknown,
                             trust_remote_code=args.trust_remote_code, labels=args.labels,
                             terms=args.terms, terms_out=args.terms_out)
    offsets = ", ".join(f"{k} {v:+.2f}" for k, v in content["emotion_offsets"].items()) or "none"
    mined = content["miner"]["terms"]
    confusions = len([k for k in content["miner"] if k != "terms"])
    print(f"emotion offsets: {offsets}; {confusions} confusion(s) mined; {len(mined['replace'])} "
          f"term replacement(s) and {len(mined['terms'])} often-missed term(s) proposed"
          f"{terms_list_note(args.terms_out, mined)}; wrote {args.out}")


def terms_list_note(terms_out: str | None, mined: dict) -> str:
    if not terms_out:
        return ""
    return f" (list: {terms_out})" if mined["terms"] else f" (none: {terms_out} not written)"


def run_cascade(args) -> None:
    from svlora.postprocess import train_cascade

    train_cascade(args.model, args.data, args.val, args.out, adapter=args.adapter, text=args.text,
                  hidden=args.hidden, device=args.device, hub=args.hub,
                  allow_base_mismatch=args.allow_base_mismatch,
                  ban_emo_unknown=args.ban_emo_unknown, trust_remote_code=args.trust_remote_code,
                  labels=args.labels,
                  cache_dir=args.cache_dir)
    print(f"wrote {args.out}")
