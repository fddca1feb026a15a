// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Time} from "@openzeppelin/contracts/utils/types/Time.sol";

/// @title Auton
/// @notice The project's currency and its voting power: ERC-20 with ERC-2612 permits and ERC-5805 votes.
/// @dev Votes are checkpointed by timestamp (ERC-6372 `mode=timestamp`), the clock the governor reads.
///
/// Default self-delegation: plain ERC20Votes gives a holder zero votes until they call `delegate`, a step
/// most holders never take. Here an account with no delegate that receives tokens is delegated to itself
/// first, so holders vote without a setup step. It keeps every guarantee of checkpointed votes: voting
/// power is read at the proposal snapshot, a timepoint strictly in the past, so tokens borrowed and repaid
/// (a flash loan) within one timestamp never show in any vote. Contract accounts (the treasury timelock,
/// the marketplace, the splitter, smart wallets) are not self-delegated: tokens they hold do not vote
/// unless they delegate explicitly. An account that delegates to address(0) is delegated to itself again
/// at its next receipt; to give up voting, delegate elsewhere. The cost: every transfer to or from a
/// self-delegated account writes vote checkpoints, and the first receipt also stores the delegate.
contract AutonToken is ERC20, ERC20Permit, ERC20Votes {
    /// @param treasury Receives the whole initial supply.
    /// @param initialSupply Initial supply in wei (18 decimals).
    constructor(address treasury, uint256 initialSupply) ERC20("Auton", "AUTON") ERC20Permit("Auton") {
        _mint(treasury, initialSupply);
    }

    /// @notice The ERC-6372 clock: the block timestamp.
    function clock() public view override returns (uint48) {
        return Time.timestamp();
    }

    /// @notice The ERC-6372 clock mode: timestamps.
    // solhint-disable-next-line func-name-mixedcase
    function CLOCK_MODE() public pure override returns (string memory) {
        return "mode=timestamp";
    }

    /// @notice The next permit nonce of `owner`.
    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }

    /// @dev Self-delegates an undelegated externally owned recipient before moving the tokens (see the
    /// contract doc), then moves balances and votes.
    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        if (to != address(0) && delegates(to) == address(0) && to.code.length == 0) {
            _delegate(to, to);
        }
        super._update(from, to, value);
    }
}
