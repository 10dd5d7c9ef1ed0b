"""The system prompts and the RG strategy instruction, rendered from the Jinja2 templates in ``prompts/``."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import jinja2

from ipm_prefdial.errors import InputError, SetupError
from ipm_prefdial.taxonomy import Taxonomy, builtin

# What separates the last user message of an RG prompt (the seeker's words, the inserted "Hi" or the " " filler)
# from the strategy instruction after it: a blank line, always (METHOD.md section 2).
RG_SEPARATOR = "\n\n"
# The longest judge explanation kept (the judge prompt states it; ``judging.clip`` applies it).
JUDGE_EXPLANATION_CHARS = 120
TEMPLATES = ("sp_system.j2", "rg_system.j2", "vm_system.j2", "rg_instruction.j2", "judge_system.j2", "judge_user.j2")


class PromptError(InputError):
    """A prompt template that does not render (its file, its line, what is wrong)."""


def default_prompts_dir() -> Path:
    """``prompts/`` inside the installed package (wheel) or at the top of the repository (checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "prompts", here.parent / "prompts"):
        if (candidate / "sp_system.j2").is_file():
            return candidate
    raise SetupError(f"prompt templates not found next to {here} (looked for prompts/sp_system.j2)")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RgInstruction:
    """What follows the last user message of an RG prompt: the separator and the instruction, ``{strategy}``
    standing for the strategy. A build records this text in its manifest, so the rows can be checked and
    re-instructed (``ipm validate``, ``ipm infer``) without the template files."""

    template: str

    def suffix(self, strategy: str) -> str:
        return self.template.replace("{strategy}", strategy)

    def parse(self, user_content: str) -> str | None:
        """The strategy named at the end of ``user_content``, or None."""
        head, _, tail = self.template.partition("{strategy}")
        match = re.search(re.escape(head) + r"(.+?)" + re.escape(tail) + r"\Z", user_content, re.S)
        return match.group(1) if match else None


@dataclass(frozen=True)
class Prompts:
    """Rendered prompts of one build. Construct once; rendering per turn is a string format."""

    directory: Path = field(default_factory=default_prompts_dir)
    # The strategies the system prompts list (``_strategies.j2`` renders ``strategies``), and the joint format's
    # example: ESConv's by default.
    taxonomy: Taxonomy = field(default_factory=lambda: builtin("esconv"))

    @cached_property
    def _env(self) -> jinja2.Environment:
        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.directory)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )

    def _render(self, name: str, **kwargs: str) -> str:
        # every template may list the taxonomy's strategies (through _strategies.j2) and show its joint example
        label, reply = self.taxonomy.example_parts()
        context = {"strategies": self.taxonomy.listing(), "example_strategy": label, "example_reply": reply, **kwargs}
        try:
            return self._env.get_template(name).render(**context).strip("\n")
        except jinja2.TemplateNotFound as exc:
            raise PromptError(f"{self.directory / name}: prompt template missing") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"{self.directory / name}: line {exc.lineno}: {exc.message}") from None
        except jinja2.UndefinedError as exc:
            raise PromptError(f"{self.directory / name}: {exc.message} (the variables it may use: "
                              f"{', '.join(sorted(context))})") from None

    @cached_property
    def sp_system(self) -> str:
        return self._render("sp_system.j2")

    @cached_property
    def rg_system(self) -> str:
        return self._render("rg_system.j2")

    @cached_property
    def vm_system(self) -> str:
        return self._render("vm_system.j2")

    @cached_property
    def cso_system(self) -> str:
        """The joint prompt in CSO's convention, ``(strategy) reply``: the system message of `ipm export --format
        cso`, whose supporter messages are written that way."""
        return self._render("cso_system.j2")

    @cached_property
    def judge_system(self) -> str:
        return self._render("judge_system.j2", explanation_chars=str(JUDGE_EXPLANATION_CHARS))

    def judge_user(self, history: str, last_seeker: str, reply_1: str, reply_2: str) -> str:
        return self._render("judge_user.j2", history=history, last_seeker=last_seeker, reply_1=reply_1,
                            reply_2=reply_2)

    def eval_judge_system(self, dimension: str, definition: str) -> str:
        return self._render("eval_judge_system.j2", dimension=dimension, definition=definition)

    def eval_judge_user(self, context: str, reference: str, candidate: str) -> str:
        return self._render("eval_judge_user.j2", context=context, reference=reference, candidate=candidate)

    @cached_property
    def _instruction_parts(self) -> tuple[str, str]:
        marker = "\x00STRATEGY\x00"
        head, _, tail = self._render("rg_instruction.j2", strategy=marker).partition(marker)
        return head, tail

    def rg_instruction(self, strategy: str) -> str:
        """The instruction naming ``strategy``, as the template renders it (no separator)."""
        head, tail = self._instruction_parts
        return f"{head}{strategy}{tail}"

    @cached_property
    def rg_rule(self) -> RgInstruction:
        return RgInstruction(RG_SEPARATOR + self.rg_instruction("{strategy}"))

    def rg_suffix(self, strategy: str) -> str:
        """What is appended to the last user message of an RG prompt: the separator, then the instruction."""
        return self.rg_rule.suffix(strategy)

    def parse_rg_instruction(self, user_content: str) -> str | None:
        """The strategy named by the instruction at the end of ``user_content`` (after the separator), or None."""
        return self.rg_rule.parse(user_content)

    def check_listing(self) -> None:
        """Every system prompt a build sends (SP, RG, VM) names every label of the taxonomy: a template of an older
        ``--prompts-dir`` that lists strategies of its own would ask for labels the build does not use."""
        for name in ("sp_system", "rg_system", "vm_system"):
            text = getattr(self, name)
            missing = [label for label in self.taxonomy.names if label not in text]
            if missing:
                raise PromptError(f"{self.directory / (name + '.j2')}: does not list the {self.taxonomy.name} "
                                  f"strategies {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} (include "
                                  "_strategies.j2, which renders {{ strategies }})")

    def hashes(self) -> dict[str, str]:
        """sha256 of every rendered prompt (the instruction with a placeholder strategy)."""
        return {
            "sp_system": sha256_text(self.sp_system),
            "rg_system": sha256_text(self.rg_system),
            "vm_system": sha256_text(self.vm_system),
            "rg_instruction": sha256_text(self.rg_rule.template),
            "judge_system": sha256_text(self.judge_system),
            "judge_user": sha256_text(self.judge_user("{history}", "{last_seeker}", "{reply_1}", "{reply_2}")),
        }
