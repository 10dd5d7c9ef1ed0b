"""``ipm agreement``: how far to trust the LLM judge. Its error label of each reply is compared with the labels of
people (the annotation files ``ipm view`` exports) and of another judge (``--reference``): Cohen's kappa over the
four labels, over error vs no error and over the retained verdict of a pair, the confusion of labels, the pairs
the raters disagree on, and how often people prefer the gold reply (with a Wilson interval).

A kappa is the agreement of two raters beyond what their label frequencies give by chance. On a few dozen pairs it
is too noisy to act on, so comparisons of the judge with a person on fewer than 50 pairs carry a warning.

The modules: ``read`` (the build's verdicts, annotation and reference files), ``figures`` (kappas, confusion,
preference), ``render`` (console tables, JSON, markdown).
"""
